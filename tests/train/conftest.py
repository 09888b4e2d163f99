"""Fixtures for fine-tuning tests (the tiny model and the MLflow template: tests/conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from slmops.store import Workspace
from slmops.train.args import TrainArgs
from slmops.train.datasets import TrainDatasets, TrainExample


@pytest.fixture
def tracked(workspace: Workspace, mlflow_template: Path) -> Workspace:
    """The test's workspace with its own copy of the migrated tracking store."""
    shutil.copy(mlflow_template, workspace.home / "mlflow.db")
    return workspace


def sums(count: int = 24) -> list[TrainExample]:
    return [
        TrainExample(
            messages=[
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
            ]
        )
        for i in range(count)
    ]


@pytest.fixture
def sums_data(workspace: Workspace) -> str:
    version, _ = TrainDatasets(workspace).add("sums", sums(), split=0.75)
    return version.ref


FAST = TrainArgs(
    epochs=2,
    micro_batch_size=4,
    grad_accumulation=2,
    learning_rate=5e-3,
    checkpoint_every=2,
    precision="fp32",
    threads=1,
)
