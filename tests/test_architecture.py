"""Project-wide rules: imports flow one way through the layers; importing is side-effect free."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "slmops"
# Lowest first. A module may import from its own layer and any layer before it. train/ builds
# on eval/ (its datasets become training data), never the other way round.
LAYERS = [
    "errors",
    "store",
    "models",
    "core",
    "data",
    "prompts",
    "apps",
    "eval",
    "train",
    "registry",
    "monitor",
    "serve",
    "pipelines",
    "ui",
    "cli",
]


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "slmops" or len(parts) < 2:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def test_imports_flow_downward_only():
    violations = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        own = layer_of(".".join(relative.parts))
        if own is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                imported = layer_of(name)
                if imported is not None and imported > own:
                    violations.append(f"{relative}: imports {name}")
    assert violations == []


def test_heavy_backends_are_not_imported_by_core_modules():
    heavy = {
        "llama_cpp",
        "xllamacpp",
        "onnxruntime",
        "torch",
        "sentence_transformers",
        "transformers",
        "lancedb",
        "fastapi",
    }
    for path in (PACKAGE / "core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: lazy imports inside functions are fine
            if isinstance(node, ast.Import | ast.ImportFrom):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                assert (module or "").split(".")[0] not in heavy, f"{path.name} imports {module}"


def test_import_slmops_loads_no_model_library_and_writes_nothing(tmp_path):
    code = (
        "import sys, slmops\n"
        "names = ('torch', 'llama_cpp', 'xllamacpp', 'onnxruntime', 'sentence_transformers')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(heavy)\n"
    )
    clean = tmp_path / "clean"
    clean.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=clean, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
    assert list(clean.iterdir()) == []  # no ./.slmops created by importing


def test_every_third_party_import_is_a_declared_dependency():
    """Catches code that works only because a package happens to be installed here."""
    import importlib.metadata
    import re
    import tomllib

    project = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())["project"]
    declared_specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        declared_specs += extra
    declared = {
        re.split(r"[<>=!\[; ]", spec, maxsplit=1)[0].lower().replace("_", "-")
        for spec in declared_specs
    }
    distributions = importlib.metadata.packages_distributions()
    stdlib = sys.stdlib_module_names
    missing = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in stdlib or top == "slmops":
                    continue
                owners = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                if not owners & declared:
                    missing.add(f"{top} (from {path.name}, provided by {sorted(owners)})")
    assert sorted(missing) == []
