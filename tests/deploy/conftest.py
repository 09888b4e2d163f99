"""The deployment tests read files and run linters: they need no slmops workspace."""

from __future__ import annotations

import pytest


@pytest.fixture
def runtime() -> None:
    """Overrides the suite's autouse runtime fixture (tests/conftest.py), which opens a
    workspace for every test: nothing here traces or caches."""
    return None
