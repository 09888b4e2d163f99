"""Writing a new pipeline from a shipped template."""

from __future__ import annotations

import os
from pathlib import Path
from string import Template

from slmops.pipelines.spec import PIPELINE_FILE, PipelineError, PipelineSpec, load_pipeline
from slmops.store.names import name_problem

TEMPLATES_DIR = Path(__file__).parent / "templates"
PIPELINE_TEMPLATES = sorted(p.name for p in TEMPLATES_DIR.iterdir() if p.is_dir())


def init_pipeline(
    name: str, template: str, directory: Path, *, corpus: str, stack: str, docs: str
) -> PipelineSpec:
    """Write DIRECTORY/NAME/pipeline.toml from ``template``; never overwrites a file."""
    problem = name_problem("pipeline", name)
    if problem:
        raise PipelineError(problem)
    if template not in PIPELINE_TEMPLATES:
        raise PipelineError(
            f"unknown pipeline template {template!r}; templates: {', '.join(PIPELINE_TEMPLATES)}"
        )
    target = directory / name / PIPELINE_FILE
    if target.exists():
        raise PipelineError(f"{target} already exists; choose another name or edit it")
    # paths in the file are read from its folder: name the documents from there
    docs = os.path.relpath(Path(docs).expanduser().resolve(), target.parent.resolve())
    text = (TEMPLATES_DIR / template / PIPELINE_FILE).read_text(encoding="utf-8")
    filled = Template(text).safe_substitute(name=name, corpus=corpus, stack=stack, docs=docs)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_text(filled, encoding="utf-8")
        partial.replace(target)
    except OSError as exc:
        raise PipelineError(f"cannot write {target}: {exc}") from None
    return load_pipeline(target)
