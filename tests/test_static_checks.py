"""The code is ruff-clean, formatted and type-checked: in the suite, so CI tells it plainly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "check", "src", "tests", "bench", "scripts"),
        ("ruff", "format", "--check", "src", "tests", "bench", "scripts"),
        ("mypy", "src/slmops"),  # settings in pyproject.toml [tool.mypy]
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_static_check_passes(command: tuple[str, ...]) -> None:
    result = run(*command)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}"
