"""Fixtures for stack tests: stacks are written into a temporary folder that is also the
current directory, so stack names resolve the way they do for a user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from slmops.apps.quickstart import bundled_docs
from slmops.data.corpus import corpora_for
from slmops.store import Workspace


@pytest.fixture
def stacks_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "stacks"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


@pytest.fixture
def handbook(workspace: Workspace) -> Any:
    """Corpus 'docs' holding the bundled slmops handbook (version 1)."""
    corpora_for(workspace).ingest("docs", [bundled_docs()])
    return corpora_for(workspace)


def write_manifest(directory: Path, name: str, text: str) -> Path:
    folder = directory / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "slmops.toml"
    path.write_text(text, encoding="utf-8")
    return path
