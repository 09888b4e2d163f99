"""Exports llama.cpp runs: tensor names and Q/K order right (the model written back equals the
GGUF it came from), merged models and adapters computing what transformers computes, every
format loadable, the run id in the metadata."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from llama_cpp import Llama

from slmops.errors import ConfigError, ModelError
from slmops.models.gguf_files import check_adapter, write_model_gguf
from slmops.models.loading import load_chat_model
from slmops.models.uri import parse_model_uri
from slmops.store import Workspace
from slmops.train.export import FORMATS, RunExporter
from slmops.train.runs import Training
from tests.train.conftest import FAST


def tensors(path: Path) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}


def metadata(path: Path, key: str) -> object:
    field = gguf.GGUFReader(path).get_field(key)
    return None if field is None else field.contents()


def llama_logits(model: Path, tokens: list[int], adapter: Path | None = None) -> np.ndarray:
    llm = Llama(
        model_path=str(model),
        lora_path=str(adapter) if adapter else None,
        n_ctx=128,
        n_threads=1,
        logits_all=True,
        verbose=False,
    )
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)])


TOKENS = [1, 504, 3287, 314, 253, 1345, 30, 216, 57, 905, 2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_base, mlflow_template) -> tuple[Workspace, str]:
    """A finished LoRA run on the tiny model with adapters large enough to matter."""
    import shutil

    from slmops.train.datasets import TrainDatasets
    from tests.train.conftest import sums

    ws = Workspace.open(tmp_path_factory.mktemp("export-ws"))
    shutil.copy(mlflow_template, ws.home / "mlflow.db")
    TrainDatasets(ws).add("sums", sums(), split=0.75)
    args = FAST.model_copy(update={"learning_rate": 0.05, "epochs": 3})
    outcome = Training(ws).start(base=tiny_base, data="sums@1", args=args)
    return ws, outcome.run_id


def test_weights_written_back_equal_the_gguf_they_came_from(tiny_gguf, tiny_base, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base.removeprefix("hf:"))
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    out = write_model_gguf(weights, tiny_gguf, tmp_path / "again.gguf", dtype="f32")
    original, again = tensors(tiny_gguf), tensors(out)
    assert original.keys() == again.keys()  # no output.weight: the embeddings stay tied
    assert all(np.array_equal(original[name], again[name]) for name in original)
    assert metadata(out, "tokenizer.chat_template") == metadata(
        tiny_gguf, "tokenizer.chat_template"
    )


def test_merged_and_adapter_exports_compute_what_transformers_computes(trained, tmp_path):
    ws, run_id = trained
    exporter = RunExporter(ws, run_id)
    merged, _ = exporter.merged_weights()
    with torch.no_grad():
        expected = merged(torch.tensor([TOKENS])).logits[0].numpy()
    weights = {k: v.numpy() for k, v in merged.state_dict().items()}
    f32 = write_model_gguf(weights, exporter._need_template(), tmp_path / "m.gguf", dtype="f32")
    from_merged = llama_logits(f32, TOKENS)
    assert np.abs(from_merged - expected).max() < 1e-3
    adapter = exporter.export("adapter").path
    base = Path(str(exporter.template))
    from_adapter = llama_logits(base, TOKENS, adapter)
    assert np.abs(from_adapter - expected).max() < 1e-3
    # the adapter really changes the model: without it the logits differ
    assert np.abs(llama_logits(base, TOKENS) - expected).max() > 0.05
    f16 = exporter.export("gguf-f16").path
    assert np.abs(llama_logits(f16, TOKENS) - expected).max() < 0.05


@pytest.mark.parametrize("fmt", ["gguf-q8_0", "gguf-q4_0", "gguf-q4_k_m"])
def test_quantized_exports_load_and_name_their_run(trained, fmt):
    ws, run_id = trained
    result = RunExporter(ws, run_id).export(fmt)
    assert result.path.is_file() and result.size_bytes == result.path.stat().st_size
    assert metadata(result.path, "slmops.train.run_id") == run_id
    assert metadata(result.path, "slmops.train.dataset") == "sums@1"
    kinds = {t.tensor_type.name for t in gguf.GGUFReader(result.path).tensors}
    assert kinds - {"F32"}, "weights were quantized"
    model = load_chat_model(result.model_uri)
    assert model.count_tokens("hello world") == 2


def test_an_adapter_uri_loads_the_base_with_the_adapter(trained):
    ws, run_id = trained
    result = RunExporter(ws, run_id).export("adapter")
    parsed = parse_model_uri(result.model_uri)
    assert parsed.adapter == str(result.path) and parsed.scheme == "gguf"
    assert str(parsed) == result.model_uri
    assert load_chat_model(result.model_uri).count_tokens("hello") == 1
    assert metadata(result.path, "adapter.lora.alpha") == pytest.approx(32.0)


def test_hf_export_is_a_checkpoint_that_exports_again(trained, tmp_path):
    ws, run_id = trained
    result = RunExporter(ws, run_id).export("hf", tmp_path / "merged")
    assert (result.path / "config.json").is_file() and result.model_uri == f"hf:{result.path}"
    model = load_chat_model(result.model_uri)
    assert model.uri == result.model_uri


def test_bad_adapters_and_runs_are_refused_with_a_reason(trained, tiny_gguf, tmp_path):
    ws, run_id = trained
    not_adapter = RunExporter(ws, run_id).export("gguf-f16").path
    with pytest.raises(ModelError, match="is not a LoRA adapter GGUF"):
        check_adapter(not_adapter, tiny_gguf)
    garbage = tmp_path / "x.gguf"
    garbage.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match="not a readable GGUF"):
        load_chat_model(f"gguf:{tiny_gguf}+adapter:{garbage}")
    with pytest.raises(ConfigError, match="unknown export format"):
        RunExporter(ws, run_id).export("gguf-q3")
    assert "adapter" in FORMATS and "gguf-q8_0" in FORMATS


def test_an_export_never_overwrites_a_file_outside_the_exports_folder(trained, tmp_path):
    ws, run_id = trained
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="exists; remove it or choose another"):
        RunExporter(ws, run_id).export("hf", precious)
    assert (precious / "notes.txt").read_text() == "keep me"
