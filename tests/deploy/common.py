"""What the deployment tests share: paths, YAML loading, and the optional tools they drive.

Optional tools are looked up, never assumed: a test that needs one it cannot find skips and
says which one and how to get it (deploy/README.md, "What was run here", lists them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
CHART = DEPLOY / "helm" / "slmops"
ENV_EXAMPLE = DEPLOY / ".env.example"
PYPROJECT = ROOT / "pyproject.toml"
APP = ROOT / "src" / "slmops" / "serve" / "app.py"


Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)


def load_all_yaml(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=Loader) if doc is not None]


def plain_yaml_files() -> list[Path]:
    """Every YAML file of the deployment that is plain YAML (Helm templates are Go templates)."""
    templates = CHART / "templates"
    found = [COMPOSE, *DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]
    return sorted(p for p in found if templates not in p.parents)


def tool(name: str) -> str | None:
    """An executable on PATH or next to this interpreter (console scripts of pip packages)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


# --- .dockerignore --------------------------------------------------------------------------


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves ``path`` (relative, '/'-separated) out of the build context.

    The rules Docker applies: the last matching pattern wins, ``!`` re-includes, a pattern
    that matches a folder matches everything below it, and ``**`` matches any number of
    folders. Enough of them for an allow-list file like ours.
    """
    excluded = False
    parts = path.split("/")
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip().strip("/")
        if not pattern:
            continue
        regex = _glob_regex(pattern)
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A Docker ignore pattern as a regular expression over '/'-separated paths."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            close = pattern.index("]", i)
            out.append("[" + pattern[i + 1 : close].replace("\\", "\\\\") + "]")
            i = close + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


# --- Helm -----------------------------------------------------------------------------------


class RenderError(Exception):
    """The chart refused to render (a `fail` in a template, a template error)."""


class HelmRenderer:
    """`helm template` and `helm lint`, from the helm binary when one is on PATH, else from
    Helm's own Go SDK inside the `helm-python-sdk` wheel (import name helm_python)."""

    def __init__(self) -> None:
        self.binary = shutil.which("helm")
        self._sdk: Any = None
        if self.binary is None:
            try:
                import helm_python  # type: ignore[import-not-found]
            except ImportError:
                pytest.skip(
                    "no Helm engine: neither a `helm` binary on PATH nor the pip package "
                    "helm-python-sdk (Helm's Go SDK as a wheel) is installed"
                )
            self._sdk = helm_python
        self.name = f"helm binary {self.binary}" if self.binary else "helm-python-sdk"

    def render(
        self, values: dict[str, Any] | None = None, *, release: str = "demo", namespace: str = "slm"
    ) -> dict[str, str]:
        """Template path (slmops/templates/x.yaml) -> rendered text, NOTES.txt included."""
        if self.binary is None:
            with self._sdk.Chart.load(str(CHART)) as chart:
                try:
                    return dict(chart.render(values or {}, name=release, namespace=namespace))
                except self._sdk.HelmError as error:
                    raise RenderError(str(error)) from None
        with tempfile.TemporaryDirectory() as folder:
            values_file = Path(folder) / "values.yaml"
            values_file.write_text(yaml.safe_dump(values or {}), encoding="utf-8")
            result = subprocess.run(
                [self.binary, "template", release, str(CHART), "--namespace", namespace,
                 "--values", str(values_file), "--include-crds"],
                capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
        if result.returncode != 0:
            raise RenderError(result.stderr)
        return _split_sources(result.stdout)

    def lint(self, values: dict[str, Any] | None = None) -> list[str]:
        """`helm lint --strict`: the findings that make it fail (warnings and errors)."""
        if self.binary is None:
            report = self._sdk.lint(str(CHART), values or {}, strict=True)
            found = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
            return found + list(report["errors"])
        with tempfile.TemporaryDirectory() as folder:
            values_file = Path(folder) / "values.yaml"
            values_file.write_text(yaml.safe_dump(values or {}), encoding="utf-8")
            result = subprocess.run(
                [self.binary, "lint", "--strict", str(CHART), "--values", str(values_file)],
                capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
        return [] if result.returncode == 0 else [result.stdout + result.stderr]


def _split_sources(stream: str) -> dict[str, str]:
    """`helm template` output -> {template path: its documents}, by the `# Source:` lines."""
    rendered: dict[str, str] = {}
    for document in re.split(r"^---\s*$", stream, flags=re.MULTILINE):
        match = re.search(r"^# Source: (\S+)$", document, flags=re.MULTILINE)
        if match:
            rendered[match.group(1)] = rendered.get(match.group(1), "") + "\n---\n" + document
    return rendered


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """The Kubernetes objects in a render (NOTES.txt left out)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith((".yaml", ".yml")):
            objects.extend(load_all_yaml(text))
    return objects


def unguarded_routes() -> set[str]:
    """GET routes of the server that need no API key: ``@app.get(PATH, ...)`` decorators in
    serve/app.py without ``dependencies=`` (read from the syntax tree, so any formatting of
    the decorator counts)."""
    import ast

    routes = set()
    for node in ast.walk(ast.parse(APP.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if (
                isinstance(decorator, ast.Call)
                and isinstance(decorator.func, ast.Attribute)
                and decorator.func.attr == "get"
                and isinstance(decorator.func.value, ast.Name)
                and decorator.func.value.id == "app"
                and decorator.args
                and isinstance(decorator.args[0], ast.Constant)
                and not any(k.arg == "dependencies" for k in decorator.keywords)
            ):
                routes.add(str(decorator.args[0].value))
    return routes
