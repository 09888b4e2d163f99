"""Training runs on the tiny model: the loss falls, a stopped run resumes to the very same
weights, early stopping keeps the best epoch, and MLflow holds the whole record."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slmops.errors import ConfigError, ModelError, NotFoundError
from slmops.store import Workspace
from slmops.train import model as model_module
from slmops.train.args import LoraArgs, TrainArgs, check_args
from slmops.train.datasets import TrainDatasets, TrainExample, split_of
from slmops.train.runs import Training, run_dir, state_of
from slmops.train.tracking import Tracker
from tests.train.conftest import FAST


def adapter_weights(outcome) -> dict[str, torch.Tensor]:
    return load_file(outcome.output / "adapter_model.safetensors")


def test_a_run_learns_and_mlflow_keeps_its_record(tracked: Workspace, tiny_base, sums_data):
    training = Training(tracked)
    outcome = training.start(base=tiny_base, data=sums_data, args=FAST, name="sums-exp")
    assert outcome.status == "finished" and outcome.state.stop_reason == "epochs done"
    tracker = training.tracker
    losses = [v for _, v in tracker.history(outcome.run_id, "train_loss")]
    train_examples = TrainDatasets(tracked).resolve(sums_data).train
    steps_per_epoch = math.ceil(math.ceil(train_examples / 4) / 2)  # batches of 4, 2 a step
    assert len(losses) == outcome.state.step == 2 * steps_per_epoch
    assert losses[-1] < losses[0]
    assert len(tracker.history(outcome.run_id, "heldout_loss")) == 2
    run = training.run(outcome.run_id[:8])
    assert run.status == "FINISHED" and state_of(run) == "finished"
    assert run.experiment == "sums-exp"
    assert run.params["data"] == sums_data and run.params["base"] == tiny_base
    assert run.params["lora.r"] == "16" and run.params["train_examples"] == str(train_examples)
    assert run.tags["slmops.base_digest"].startswith("sha256:")
    assert run.metrics["train_tokens_per_s"] > 0 and run.metrics["peak_memory_mb"] > 0
    artifacts = tracker.artifacts(outcome.run_id)
    assert {"adapter/adapter_model.safetensors", "run.json", "loss.svg"} <= set(artifacts)
    inputs = tracker.client.get_run(outcome.run_id).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == [sums_data]
    svg = (run_dir(tracked, outcome.run_id) / "loss.svg").read_text()
    assert svg.startswith("<svg") and "held-out loss" in svg
    # MLflow's own client, pointed at the workspace store, sees the same run
    assert [r.run_id for r in training.runs()] == [outcome.run_id]
    assert Tracker(tracked).client.get_run(outcome.run_id).info.status == "FINISHED"


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_stopped_run_resumes_to_the_same_weights(tracked, tiny_base, sums_data, method):
    args = FAST.model_copy(update={"method": method, "checkpoint_every": 1})
    training = Training(tracked)
    whole = training.start(base=tiny_base, data=sums_data, args=args)
    steps = iter(range(100))
    stopped = training.start(
        base=tiny_base, data=sums_data, args=args, should_stop=lambda: next(steps) == 2
    )
    assert stopped.status == "interrupted" and stopped.state.step == 3
    assert state_of(training.run(stopped.run_id)) == "interrupted"
    resumed = training.resume(stopped.run_id[:10])
    assert resumed.status == "finished" and resumed.run_id == stopped.run_id
    if method == "lora":
        expected, got = adapter_weights(whole), adapter_weights(resumed)
    else:
        expected = load_file(whole.output / "model.safetensors")
        got = load_file(resumed.output / "model.safetensors")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    history = training.tracker.history(resumed.run_id, "train_loss")
    assert [s for s, _ in history] == list(range(1, whole.state.step + 1))
    with pytest.raises(ConfigError, match="already finished"):
        training.resume(resumed.run_id)


def test_early_stopping_keeps_the_best_epoch(tracked, tiny_base):
    # Training answers say "yes", held-out ones "no" to the same kind of question: the more
    # it learns, the worse the held-out loss, so the first epoch is the best.
    examples = [
        TrainExample(
            id=f"q{i}",
            messages=[
                {"role": "user", "content": f"Is {i} a number?"},
                {
                    "role": "assistant",
                    "content": "yes" if split_of(f"q{i}", 0.75) == "train" else "no",
                },
            ],
        )
        for i in range(24)
    ]
    data, _ = TrainDatasets(tracked).add("contrary", examples, split=0.75)
    args = FAST.model_copy(update={"epochs": 6, "learning_rate": 0.02, "early_stop_patience": 1})
    outcome = Training(tracked).start(base=tiny_base, data=data.ref, args=args)
    state = outcome.state
    assert state.stop_reason == "early stop" and state.epoch < 6
    assert state.best_epoch is not None and state.best_epoch < state.epoch
    best = load_file(run_dir(tracked, outcome.run_id) / "best.safetensors")
    saved = adapter_weights(outcome)
    assert all(
        torch.equal(best[name], saved[name.replace(".default.weight", ".weight")]) for name in best
    )


def test_arguments_are_checked_together():
    with pytest.raises(ConfigError) as error:
        check_args({"epochs": 0, "learning_rate": -1, "lora": {"targets": ["embed_tokens"]}})
    message = str(error.value)
    assert "epochs" in message and "learning_rate" in message and "embed_tokens" in message
    assert LoraArgs().targets[0] == "q_proj" and TrainArgs().method == "lora"


def test_bad_starts_are_refused_before_anything_runs(tracked, tiny_base, sums_data, monkeypatch):
    training = Training(tracked)
    with pytest.raises(NotFoundError, match="no training dataset named 'nothing'"):
        training.start(base=tiny_base, data="nothing@1", args=FAST)
    with pytest.raises(ModelError, match="cannot fine-tune 'openai:"):
        training.start(base="openai:http://127.0.0.1:9/v1#m", data=sums_data, args=FAST)
    assert training.runs() == []
    # full fine-tuning is for small models: the limit, lowered below the tiny model's size
    monkeypatch.setattr(model_module, "FULL_FINETUNE_MAX_PARAMETERS", 1000)
    with pytest.raises(ConfigError, match="at most 1,000 parameters; this one has"):
        model_module.load_trainable(
            Path(tiny_base.removeprefix("hf:")), FAST.model_copy(update={"method": "full"})
        )


def test_an_eval_of_an_export_is_logged_on_its_training_run(tracked, tiny_base, sums_data):
    training = Training(tracked)
    outcome = training.start(
        base=tiny_base, data=sums_data, args=FAST.model_copy(update={"epochs": 1})
    )
    exported = tracked.home / "exports" / "m.gguf"
    training.tracker.set_tags(outcome.run_id, {"slmops.export.gguf-q8_0": str(exported)})
    summary = {"metrics": {"token_f1": {"mean": 0.5, "cases": 4}, "judge": {"mean": None}}}
    found = training.record_eval([f"gguf:{exported}"], "a" * 32, "qa@2", summary)
    assert found == [outcome.run_id]
    run = training.run(outcome.run_id)
    assert run.metrics["eval.qa_v2.token_f1"] == 0.5
    assert run.tags["slmops.eval.last"] == "qa@2 token_f1=0.500"
    assert training.record_eval(["local:smollm2-135m"], "b" * 32, "qa@2", summary) == []
    with pytest.raises(ConfigError, match="experiment name"):
        training.start(base=tiny_base, data=sums_data, args=FAST, name="../escape")


def test_a_damaged_last_checkpoint_falls_back_to_the_one_before(tracked, tiny_base, sums_data):
    args = FAST.model_copy(update={"checkpoint_every": 1})
    training = Training(tracked)
    whole = training.start(base=tiny_base, data=sums_data, args=args)
    steps = iter(range(100))
    stopped = training.start(
        base=tiny_base, data=sums_data, args=args, should_stop=lambda: next(steps) == 2
    )
    newest = sorted((run_dir(tracked, stopped.run_id) / "checkpoints").glob("step-*"))[-1]
    (newest / "trainable.safetensors").write_bytes(b"not a safetensors file")
    resumed = training.resume(stopped.run_id)
    expected, got = adapter_weights(whole), adapter_weights(resumed)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_a_run_that_diverges_stops_with_a_reason_and_is_marked_failed(
    tracked, tiny_base, sums_data, monkeypatch
):
    from slmops.train import fit as fit_module

    real = fit_module.batch_loss

    def poisoned(trainable, batch, bf16):
        loss, count = real(trainable, batch, bf16)
        return loss * float("nan"), count

    monkeypatch.setattr(fit_module, "batch_loss", poisoned)
    training = Training(tracked)
    with pytest.raises(fit_module.DivergedError, match="the loss became nan at step 1"):
        training.start(base=tiny_base, data=sums_data, args=FAST)
    (run,) = training.runs()
    assert run.status == "FAILED" and state_of(run) == "failed"


def test_one_process_trains_a_run_at_a_time(tracked, tiny_base, sums_data):
    from filelock import FileLock

    training = Training(tracked)
    steps = iter(range(100))
    stopped = training.start(
        base=tiny_base, data=sums_data, args=FAST, should_stop=lambda: next(steps) == 0
    )
    held = FileLock(str(run_dir(tracked, stopped.run_id) / ".training.lock"))
    with held, pytest.raises(ConfigError, match="being trained by another process"):
        training.resume(stopped.run_id)
