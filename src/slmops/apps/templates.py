"""``slmops init``: write a working stack from a built-in template.

A template is a folder under ``apps/stack_templates/``: ``slmops.toml`` and ``prompts/*.j2``
(``NAME.system.j2`` is that prompt's system prompt), with ``${name}``, ``${corpus}``,
``${model}``, ``${target}`` (what a red team attacks) and ``${answer}`` (a rag stack's answer
mode) filled in. Its prompts go into the
workspace's registry as ``STACK-PROMPT``, so the new stack runs without editing anything;
the router template also writes the two stacks it routes to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

from slmops.apps.discovery import workspace_stacks
from slmops.apps.manifest import ANSWER_MODES, MANIFEST_FILE, ManifestError, parse_manifest
from slmops.errors import UnknownModelError
from slmops.models.uri import parse_model_uri
from slmops.prompts.registry import PromptRegistry
from slmops.store.names import name_problem
from slmops.store.workspace import Workspace

TEMPLATES_DIR = Path(__file__).parent / "stack_templates"
TEMPLATES = ("rag", "chat", "classify", "extract", "router", "synth", "redteam", "judge")
DEFAULT_MODEL = "local:smollm2-135m"
# The rag template's answer mode: the one that measured best on the public QA samples
# (bench/eval_public_qa.py, README "Answer modes").
DEFAULT_ANSWER_MODE = "extractive"

# Stacks the router template routes to: (suffix, template).
_ROUTER_MEMBERS = (("docs", "rag"), ("chat", "chat"))


@dataclass(frozen=True)
class CreatedStack:
    name: str
    template: str
    path: Path
    prompts: list[str]


def _fill(text: str, values: dict[str, str]) -> str:
    return Template(text).safe_substitute(values)


def init_stack(
    name: str,
    template: str,
    workspace: Workspace,
    *,
    directory: Path,
    corpus: str = "docs",
    model: str = DEFAULT_MODEL,
    target: str | None = None,
    answer: str = DEFAULT_ANSWER_MODE,
) -> list[CreatedStack]:
    """Write ``directory/name/slmops.toml`` from ``template`` and register its prompts.
    Refuses to overwrite an existing stack. Returns every stack written."""
    if template not in TEMPLATES:
        raise ManifestError(f"unknown template {template!r}; templates: {', '.join(TEMPLATES)}")
    try:
        parse_model_uri(model)
    except UnknownModelError as exc:
        raise ManifestError(str(exc)) from None
    if answer not in ANSWER_MODES:
        raise ManifestError(f"answer mode must be one of {', '.join(ANSWER_MODES)}, not {answer!r}")
    for kind, value in (("stack", name), ("corpus", corpus)):
        problem = name_problem(kind, value)
        if problem:
            raise ManifestError(problem)
    members = _ROUTER_MEMBERS if template == "router" else ()
    planned = [(name, template), *((f"{name}-{suffix}", t) for suffix, t in members)]
    for stack, _ in planned:
        existing = directory / stack / MANIFEST_FILE
        if existing.exists():
            raise ManifestError(f"{existing} already exists; pick another name or remove it")
    described = (
        target or f"an assistant that answers questions about the documents in corpus '{corpus}'"
    )
    values = {
        "corpus": corpus,
        "model": model,
        "target": described.replace('"', "'"),
        "answer": answer,
    }
    return [
        _write(stack, kind, workspace, directory, {**values, "name": stack})
        for stack, kind in planned
    ]


def ensure_workspace_stack(
    name: str, template: str, workspace: Workspace, **values: str
) -> CreatedStack | None:
    """The stack ``name`` in the workspace's stacks folder, written from ``template`` (with
    init_stack's ``corpus``/``model``/``target``) the first time. Returns what was written,
    or None when the stack was already there (it is never overwritten)."""
    directory = workspace_stacks(workspace)
    if (directory / name / MANIFEST_FILE).exists():
        return None
    return init_stack(name, template, workspace, directory=directory, **values)[0]


def _write(
    name: str, template: str, workspace: Workspace, directory: Path, values: dict[str, str]
) -> CreatedStack:
    source = TEMPLATES_DIR / template
    text = _fill((source / MANIFEST_FILE).read_text(encoding="utf-8"), values)
    target = directory / name / MANIFEST_FILE
    parse_manifest(text, target)  # a template that does not validate is a bug: fail loudly
    registry = PromptRegistry(workspace)
    prompts = []
    for prompt_file in sorted((source / "prompts").glob("*.j2")):
        if prompt_file.name.endswith(".system.j2"):
            continue
        prompt = prompt_file.name.removesuffix(".j2")
        system_file = prompt_file.with_name(f"{prompt}.system.j2")
        system = (
            _fill(system_file.read_text(encoding="utf-8"), values).strip()
            if system_file.exists()
            else None
        )
        version, _ = registry.add(
            f"{name}-{prompt}",
            _fill(prompt_file.read_text(encoding="utf-8"), values).strip() + "\n",
            system=system,
            message=f"from template {template}",
        )
        prompts.append(version.ref)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".toml.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(target)
    return CreatedStack(name, template, target, prompts)
