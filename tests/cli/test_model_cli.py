"""``slmops model`` from the command line, on tiny models: register, promote through gates
(one refused), log, card, a stack on the alias, an eval recorded on the version, rollback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.cli.test_cli import assert_one_line_error, slmops
from tests.train.tiny_model import write_tiny_gguf


def test_register_promote_log_card_run_rollback(tmp_path, tiny_gguf, mlflow_template):
    home = tmp_path / "model-ws"
    home.mkdir()
    shutil.copy(mlflow_template, home / "mlflow.db")
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=1)
    first = slmops("model", "register", "tiny", f"gguf:{tiny_gguf}", home=home)
    assert "tiny@1 registered" in first.stdout, first.stderr
    assert (
        "tiny@2 registered"
        in slmops("model", "register", "tiny", f"gguf:{other}", home=home).stdout
    )
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    made = slmops(
        "init", "chatty", "--template", "chat", "--model", "registry:tiny@champion",
        home=home, cwd=stacks,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    cases = tmp_path / "greetings.jsonl"
    cases.write_text(
        "\n".join(
            json.dumps({"input": {"message": q}, "reference": r})
            for q, r in [("Say hello.", "hello"), ("Name a colour.", "red")]
        )
        + "\n"
    )
    assert slmops("eval", "dataset", "add", "greetings", str(cases), home=home).returncode == 0
    common = ["--alias", "champion", "--stack", "chatty", "-d", "greetings"]

    promoted = slmops(
        "model", "promote", "tiny@1", *common, "--gate", "error_rate<=0", "-m", "first",
        home=home, cwd=stacks,
    )  # fmt: skip
    assert promoted.returncode == 0, promoted.stderr
    assert "gate error_rate<=0 passed" in promoted.stdout
    assert "tiny@champion -> version 1" in promoted.stdout
    refused = slmops(
        "model", "promote", "tiny@2", *common, "--gate", "token_f1>=+0.5 vs champion",
        home=home, cwd=stacks,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "gate token_f1>=+0.5 vs champion FAILED" in refused.stdout
    assert "champion unchanged" in refused.stderr

    log = slmops("model", "log", "tiny", home=home).stdout
    assert "champion" in log and "- -> 1" in log and "first" in log
    card = tmp_path / "card.md"
    shown = slmops("model", "show", "tiny@champion", "--card", str(card), home=home)
    assert shown.returncode == 0, shown.stderr
    assert card.read_text().startswith("# tiny version 1")
    assert "Promoted to `tiny@champion`" in card.read_text()

    ran = slmops("run", "chatty", "Hi", home=home, cwd=stacks)
    assert ran.returncode == 0, ran.stderr
    assert "registry:tiny@champion" in ran.stdout
    evaluated = slmops("eval", "run", "chatty", "-d", "greetings", home=home, cwd=stacks)
    assert "Recorded on model version tiny@1" in evaluated.stdout, evaluated.stderr

    rolled = slmops("model", "rollback", "tiny", "--alias", "champion", home=home)
    assert "tiny@champion: version 1 -> nothing (removed)" in rolled.stdout, rolled.stderr
    assert_one_line_error(
        slmops("model", "show", "nope@1", home=home), "no registered model 'nope'"
    )
    assert_one_line_error(
        slmops("model", "promote", "tiny@2", *common, "--gate", "bleu>=1", home=home, cwd=stacks),
        "no figure 'bleu'",
    )
    assert_one_line_error(
        slmops("model", "register", "tiny", "gguf:/nowhere.gguf", home=home), "does not exist"
    )
    assert Path(home / "models" / "registry" / "tiny").is_dir()
