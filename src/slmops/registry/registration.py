"""Registering a model: any model URI, or a fine-tuning run's export with its lineage, each
version starting with a generated model card."""

from __future__ import annotations

import tempfile
from pathlib import Path

from slmops.registry.cards import render_card
from slmops.registry.store import ModelRegistry, ModelVersion
from slmops.store.debris import scratch_prefix
from slmops.train.export import RunExporter
from slmops.train.runs import Training, read_run_file


def register_uri(
    registry: ModelRegistry, *, name: str, uri: str, intended_use: str = ""
) -> ModelVersion:
    version = registry.register(name=name, uri=uri)
    registry.set_card(version, render_card(version, intended_use=intended_use))
    return registry.get(name=name, version=version.version)


def register_run(
    registry: ModelRegistry,
    *,
    name: str,
    run_id: str,
    fmt: str = "gguf-q8_0",
    intended_use: str = "",
) -> ModelVersion:
    """A version from a finished training run: its export in ``fmt`` (a GGUF file, or the
    adapter on the base), linked to the run, with the run's lineage as tags."""
    workspace = registry.workspace
    run = Training(workspace, registry.tracker).run(run_id)
    spec = read_run_file(workspace, run.run_id)
    # Named for this process: if it is killed, the next one to open the workspace removes it.
    with tempfile.TemporaryDirectory(
        dir=workspace.scratch_dir(), prefix=scratch_prefix()
    ) as scratch:
        suffix = "" if fmt == "hf" else ".gguf"
        exported = RunExporter(workspace, run.run_id).export(fmt, Path(scratch) / f"m{suffix}")
        lineage = spec["dataset"].get("lineage", {})
        version = registry.register(
            name=name,
            uri=exported.model_uri,
            run_id=run.run_id,
            tags={
                "slmops.train_run": run.run_id,
                "slmops.base": spec["base"]["uri"],
                "slmops.base_digest": spec["base"]["digest"],
                "slmops.dataset": spec["dataset"]["ref"],
                "slmops.prompt": lineage.get("prompt") or "",
                "slmops.corpora": lineage.get("corpora") or {},
                "slmops.export": fmt,
            },
        )
    card = render_card(version, intended_use=intended_use, run=run, run_spec=spec)
    registry.set_card(version, card)
    return registry.get(name=name, version=version.version)
