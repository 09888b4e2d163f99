"""``slmops train`` from the command line, on the tiny model: data, a run killed with
``kill -9`` and resumed to the same weights as an uninterrupted run, runs, show, export."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from slmops.store import Workspace
from slmops.train.args import TrainArgs
from slmops.train.runs import Training
from tests.cli.test_cli import assert_one_line_error, slmops
from tests.train.conftest import sums


def write_examples(path: Path) -> Path:
    path.write_text(
        "\n".join(e.model_dump_json(exclude={"id", "split"}) for e in sums(24)) + "\n",
        encoding="utf-8",
    )
    return path


RUN_OPTIONS = [
    "--epochs", "12", "--batch-size", "4", "--grad-accumulation", "2", "--lr", "0.005",
    "--checkpoint-every", "1", "--precision", "fp32", "--threads", "1",
]  # fmt: skip
SAME_ARGS = TrainArgs(
    epochs=12,
    micro_batch_size=4,
    grad_accumulation=2,
    learning_rate=0.005,
    checkpoint_every=1,
    precision="fp32",
    threads=1,
)


def newest_step(home: Path) -> int:
    states = list(home.glob("training/*/checkpoints/step-*/state.json"))
    return max((json.loads(p.read_text())["state"]["step"] for p in states), default=0)


def test_data_run_kill_resume_show_export(tmp_path, tiny_base, mlflow_template):
    home = tmp_path / "cli-ws"
    home.mkdir()
    shutil.copy(mlflow_template, home / "mlflow.db")
    examples = write_examples(tmp_path / "sums.jsonl")
    added = slmops("train", "data", "sums", "--file", str(examples), "--split", "0.75", home=home)
    assert "sums@1 committed: 24 chat examples" in added.stdout, added.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text(examples.read_text() + '{"messages": [{"role": "user", "content": "x"}]}\n')
    failed = slmops("train", "data", "sums", "--file", str(bad), home=home)
    assert_one_line_error(failed, "bad.jsonl, line 25: the last message must be")
    assert "sums@1" in slmops("train", "datasets", home=home).stdout  # nothing stored: still @1
    shown = slmops("train", "examples", "sums@1", "--limit", "2", home=home).stdout
    assert "assistant: 0 plus 0 is 0." in shown and "... 22 more" in shown

    # A run killed with SIGKILL after a few checkpoints...
    env = {**os.environ, "SLMOPS_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    command = [sys.executable, "-m", "slmops.cli.main", "train", "run", "--base", tiny_base]
    process = subprocess.Popen(
        [*command, "--data", "sums@1", *RUN_OPTIONS],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while newest_step(home) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, process.stderr.read() if process.stderr else ""
    killed_at = newest_step(home)
    assert 3 <= killed_at < 36
    listed = slmops("train", "runs", home=home)
    assert "crashed" in listed.stdout, listed.stdout + listed.stderr
    run_id = next(home.glob("training/*")).name

    # ...resumes from its last checkpoint to the same weights as a run that never stopped.
    resumed = slmops("train", "run", "--resume", run_id[:8], home=home)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Run {run_id} finished" in resumed.stdout
    with Workspace.open(tmp_path / "reference") as reference:
        shutil.copy(mlflow_template, reference.home / "mlflow.db")
        from slmops.train.datasets import TrainDatasets, read_examples

        TrainDatasets(reference).add("sums", read_examples(examples), split=0.75)
        whole = Training(reference).start(base=tiny_base, data="sums@1", args=SAME_ARGS)
    expected = load_file(whole.output / "adapter_model.safetensors")
    got = load_file(home / "training" / run_id / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)

    listed = slmops("train", "runs", home=home).stdout
    assert run_id[:12] in listed and "finished" in listed and "sums@1" in listed
    plot = tmp_path / "loss.svg"
    shown = slmops("train", "show", run_id[:8], "--plot", str(plot), home=home)
    assert shown.returncode == 0, shown.stderr
    for expected_text in ("base", "sums@1", "held-out loss after epoch 1", "adapter/"):
        assert expected_text in shown.stdout
    assert plot.read_text().startswith("<svg")

    exported = slmops("train", "export", run_id[:8], "--format", "adapter", home=home)
    assert exported.returncode == 0, exported.stderr
    assert "Use it as: gguf:" in exported.stdout and "+adapter:" in exported.stdout
    assert_one_line_error(
        slmops("train", "export", "ffffff", home=home), "no train run with id 'ffffff'"
    )
    assert_one_line_error(
        slmops("train", "run", "--data", "sums@1", "--epochs", "0", home=home),
        "training arguments: epochs",
    )
