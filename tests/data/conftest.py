from __future__ import annotations

from pathlib import Path

import pytest

from slmops.data.corpus import Corpora


@pytest.fixture
def corpora(workspace, shipped_embedder) -> Corpora:
    return Corpora(workspace)


@pytest.fixture
def docs(tmp_path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    return folder
