"""Sentence-transformers embedders run by ONNX Runtime: no torch in the serving process.

A sentence-transformers folder (Transformer -> Pooling -> Normalize) becomes three parts:

* the tokenizer, run by the ``tokenizers`` library from the folder's ``tokenizer.json``
  (configured the way sentence-transformers configures it: truncation to ``max_seq_length``,
  no fixed padding);
* the transformer, an ONNX graph exported once from the folder's own weights with
  ``torch.onnx`` (dynamic batch and sequence axes) into a cache folder, and optionally
  quantised to int8 (dynamic quantisation of the weights) as a second file beside it;
* pooling and L2 normalisation, done here in numpy exactly as the folder's Pooling module
  configures them.

Only the export needs torch, transformers and sentence-transformers; once the cache holds the
graph, loading imports onnxruntime, tokenizers and numpy and nothing else (about a second and
a fraction of torch's memory instead of ten seconds and ~600 MB).

The cache folder is ``$XDG_CACHE_HOME/slmops/onnx/<name>-<digest>-v<format>/`` (else
``~/.cache/slmops/onnx/...``), the same root as the model digests of
:mod:`slmops.models.fingerprint`. The digest is the SHA-256 of the source folder's files, so a
reinstalled or edited model exports again instead of using a stale graph. Files are written
to a temporary name and renamed; a manifest, written last, records each graph's size and
SHA-256, and a graph without a matching manifest entry (a crash, a truncated copy, a corrupt
disk block) is exported again rather than used.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from slmops.errors import ModelError, ModelUnavailableError

if TYPE_CHECKING:
    from slmops.models.base import Embedder

log = logging.getLogger("slmops.models")

Variant = Literal["fp32", "int8"]
EXPORT_FORMAT = 1
"""Bumped when the exported graph changes shape or meaning: old cache folders are ignored."""
OPSET = 17  # LayerNormalization is one op from opset 17; onnxruntime >= 1.14 runs it
MAX_THREADS = 8
"""Intra-op threads at most: a 6-layer encoder on batches of 32 gains little beyond 8."""
MIN_BATCH_TOKENS = 512
"""Padded tokens per run below which a batch is not cut for padding: smaller runs leave the
intra-op threads short of work (measured with 2 threads on MiniLM: 8 x 48 tokens ran 18%
slower per text than 12 x 48 or 32 x 48)."""
MAX_PADDING = 0.05
"""A batch past :data:`MIN_BATCH_TOKENS` ends where one more (shorter) text would make its
padding more than this share of its real tokens. The encoder's cost grows with the padded
tokens, and chunks of mixed lengths (a real corpus cut by the chunker) padded to the longest
of 32 waste up to half of the work: the bundled handbook's 18 chunks cost 2.1x their tokens
in one batch, 1.14x cut this way, and embed 1.6-2x faster (tried: 256-1536 tokens, 0-30%)."""
IDLE_THREADS_SPIN = False
"""Whether idle intra-op threads spin for more work (ONNX Runtime's default) or sleep. In
`slmops serve` they spun beside llama.cpp's compute threads and halved the chats answered
under load (60 s soak: 65 -> 132, embeddings 1,171 -> 1,211); embedding alone is as fast
either way (``python bench/bench_embed.py --spinning``)."""
_GRAPH_FILES: dict[Variant, str] = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
_MANIFEST = "manifest.json"
_SUPPORTED_POOLING = ("mean", "cls", "max", "mean_sqrt_len_tokens")
_LEGACY_POOLING_KEYS = {  # sentence-transformers' pre-6 Pooling config, in its order
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Texts the export checks its graph on against sentence-transformers: several lengths in one
# batch (padding), one past max_seq_length (truncation), unicode and an empty string.
_PROBE_TEXTS = (
    "",
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé — 日本語のテキスト, emojis 🙂 and symbols ∑ ≠ ∞.",
    "Retrieval-augmented generation finds passages, then a small model answers from them. " * 3,
    "padding and truncation both matter " * 80,
)


class OnnxUnsupportedError(ModelError):
    """The folder's pipeline has a part this backend does not reproduce (a Dense layer, an
    unknown pooling mode, no tokenizer.json): the torch backend runs it instead."""


@dataclass(frozen=True)
class Pipeline:
    """What the ONNX backend needs to know about a sentence-transformers folder."""

    folder: Path
    transformer: Path
    """The folder of the Transformer module (usually ``folder`` itself)."""
    max_seq_length: int
    pooling: str
    dimension: int
    do_lower_case: bool


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OnnxUnsupportedError(f"{path}: cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise OnnxUnsupportedError(f"{path}: not a JSON object")
    return data


def _pooling_mode(config: dict[str, Any], where: Path) -> str:
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [m for key, m in _LEGACY_POOLING_KEYS.items() if config.get(key)]
        mode = modes if len(modes) != 1 else modes[0]
        if not modes:
            mode = "mean"  # what sentence-transformers does when no mode is switched on
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if not isinstance(mode, str) or mode not in _SUPPORTED_POOLING:
        raise OnnxUnsupportedError(
            f"{where}: pooling {mode!r} is not supported by the ONNX backend"
        )
    if config.get("include_prompt") is False:
        raise OnnxUnsupportedError(f"{where}: pooling without the prompt is not supported")
    return mode


def read_pipeline(folder: str | Path) -> Pipeline:
    """The pipeline of a sentence-transformers folder, or :class:`OnnxUnsupportedError` when
    it is anything but Transformer -> Pooling [-> Normalize] with a ``tokenizer.json``."""
    root = Path(folder)
    modules = _read_json_list(root / "modules.json")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise OnnxUnsupportedError(
            f"{root}: modules {kinds} are not Transformer, Pooling[, Normalize]"
        )
    transformer = root / str(modules[0].get("path", ""))
    pooling_folder = root / str(modules[1].get("path", ""))
    if not (transformer / "tokenizer.json").is_file():
        raise OnnxUnsupportedError(f"{transformer}: no tokenizer.json")
    st_config_path = transformer / "sentence_bert_config.json"
    st_config = _read_json(st_config_path) if st_config_path.is_file() else {}
    model_config = _read_json(transformer / "config.json")
    pooling_config = _read_json(pooling_folder / "config.json")
    max_seq_length = st_config.get("max_seq_length") or min(
        int(model_config.get("max_position_embeddings", 512)), 512
    )
    dimension = pooling_config.get("embedding_dimension") or pooling_config.get(
        "word_embedding_dimension"
    )
    if not isinstance(dimension, int) or dimension <= 0:
        raise OnnxUnsupportedError(f"{pooling_folder}: no embedding dimension")
    return Pipeline(
        folder=root,
        transformer=transformer,
        max_seq_length=int(max_seq_length),
        pooling=_pooling_mode(pooling_config, pooling_folder),
        dimension=dimension,
        do_lower_case=bool(st_config.get("do_lower_case", False)),
    )


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OnnxUnsupportedError(f"{path}: cannot be read: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
        raise OnnxUnsupportedError(f"{path}: not a list of modules")
    return sorted(data, key=lambda m: int(m.get("idx", 0)))


# --- the cache -----------------------------------------------------------------------------


def cache_root() -> Path:
    """Where exported graphs live: ``$XDG_CACHE_HOME/slmops/onnx`` (else ``~/.cache/...``)."""
    from slmops.models.fingerprint import user_cache_dir  # imports loading, which imports us

    return user_cache_dir() / "onnx"


def source_digest(folder: Path) -> str:
    """SHA-256 of the folder's files (names and contents). The model digests' stat cache makes
    a repeated call cost one ``stat`` per file instead of reading 90 MB again."""
    from slmops.models.fingerprint import model_digest  # imports loading, which imports us

    digest = model_digest(f"st:{folder}")
    if digest is None:
        raise ModelUnavailableError(f"{folder} does not exist")
    return digest.removeprefix("sha256:")


def cache_dir_for(folder: str | Path, *, name: str | None = None, root: Path | None = None) -> Path:
    """The cache folder of one source folder: its name, its digest and the export format."""
    source = Path(folder).resolve()
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in (name or source.name))
    return (root or cache_root()) / f"{label}-{source_digest(source)[:16]}-v{EXPORT_FORMAT}"


def _file_sha256(path: Path) -> str:
    from slmops.models.fingerprint import file_sha256  # imports loading, which imports us

    return file_sha256(path)


def _read_manifest(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_atomically(target: Path, write: Any) -> None:
    """``write(partial_path)`` then rename: a reader sees no file or the whole file."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        write(partial)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
        partial.replace(target)
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()


def _valid_graph(directory: Path, variant: Variant) -> bool:
    """The graph exists and matches the size and SHA-256 its manifest recorded."""
    entry = _read_manifest(directory).get(variant)
    path = directory / _GRAPH_FILES[variant]
    if not isinstance(entry, dict) or not path.is_file():
        return False
    if path.stat().st_size != entry.get("size"):
        return False
    return _file_sha256(path) == entry.get("sha256")


def _record(directory: Path, variant: Variant, extra: dict[str, Any]) -> None:
    path = directory / _GRAPH_FILES[variant]
    manifest = _read_manifest(directory)
    manifest[variant] = {"size": path.stat().st_size, "sha256": _file_sha256(path), **extra}
    text = json.dumps(manifest, indent=1, sort_keys=True)
    _write_atomically(directory / _MANIFEST, lambda p: p.write_text(text, encoding="utf-8"))


def ensure_graph(
    folder: str | Path,
    variant: Variant = "fp32",
    *,
    name: str | None = None,
    cache_root_dir: Path | None = None,
) -> Path:
    """The ONNX graph of a sentence-transformers folder, exported (and quantised) on first use.

    Several processes may ask at once: a file lock in the cache folder lets one export while
    the others wait, then use its file. An invalid graph (see :func:`_valid_graph`) is
    exported again."""
    pipeline = read_pipeline(folder)
    directory = cache_dir_for(pipeline.folder, name=name, root=cache_root_dir)
    if _valid_graph(directory, variant):
        return directory / _GRAPH_FILES[variant]
    from filelock import FileLock

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the ONNX cache folder {directory}: {exc}") from exc
    try:
        with FileLock(str(directory / ".export.lock")):
            if not _valid_graph(directory, "fp32"):
                _export(pipeline, directory)
            if variant == "int8" and not _valid_graph(directory, "int8"):
                _quantize(pipeline, directory)
    except OSError as exc:  # a full disk, a read-only cache: the loader falls back to torch
        raise ModelError(f"cannot write the ONNX graph into {directory}: {exc}") from exc
    return directory / _GRAPH_FILES[variant]


def _export(pipeline: Pipeline, directory: Path) -> None:
    """Export the transformer with torch.onnx, then check the graph against the
    sentence-transformers pipeline on :data:`_PROBE_TEXTS` before recording it."""
    started = time.perf_counter()
    log.info("exporting %s to ONNX in %s (once)", pipeline.folder, directory)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging
    except ImportError as exc:
        raise ModelError(f"exporting to ONNX needs torch and sentence-transformers: {exc}") from exc
    import inspect

    transformers_logging.disable_progress_bar()  # no "Loading weights" bar
    # Eager attention: the mask preparation of the SDPA path branches in Python on the
    # example's shapes and values, and a traced graph keeps the branch it saw for every input.
    reference = SentenceTransformer(
        str(pipeline.folder), device="cpu", model_kwargs={"attn_implementation": "eager"}
    )
    transformer: Any = reference[0]  # typed as a Module or a Tensor by torch's __getitem__
    model = transformer.auto_model.eval()
    accepted = inspect.signature(model.forward).parameters
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return self.model(**dict(zip(names, tensors, strict=True))).last_hidden_state

    # two rows of different lengths, so the traced graph sees a mask with padding in it
    example = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (example != 0).to(torch.long)
    inputs = {"input_ids": example, "attention_mask": mask, "token_type_ids": example * 0}
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "token_embeddings"]}
    target = directory / _GRAPH_FILES["fp32"]

    def write(partial: Path) -> None:
        try:
            with torch.inference_mode():
                torch.onnx.export(
                    Wrapper(),
                    tuple(inputs[n] for n in names),
                    str(partial),
                    dynamo=False,  # the dynamo exporter needs onnxscript; TorchScript suffices
                    input_names=names,
                    output_names=["token_embeddings"],
                    dynamic_axes=axes,
                    opset_version=OPSET,
                    do_constant_folding=True,
                )
        except Exception as exc:  # the exporter raises many kinds; all mean "no graph"
            raise ModelError(f"ONNX export of {pipeline.folder} failed: {exc}") from exc

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python branches on shapes
        _write_atomically(target, write)
    expected = np.asarray(
        reference.encode(list(_PROBE_TEXTS), normalize_embeddings=True, convert_to_numpy=True)
    )
    worst = _probe(pipeline, target, expected, minimum=0.9999)
    _record(
        directory, "fp32", {"probe_min_cosine": worst, "export_s": time.perf_counter() - started}
    )


def _quantize(pipeline: Pipeline, directory: Path) -> None:
    """Dynamic int8 quantisation of the weights (activations stay float), checked on the
    probe texts against the fp32 graph."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:  # onnxruntime.quantization imports the onnx package
        raise ModelError(f"int8 quantisation needs the onnx package: {exc}") from exc
    source = directory / _GRAPH_FILES["fp32"]
    target = directory / _GRAPH_FILES["int8"]

    def write(partial: Path) -> None:
        # Per-channel scales: one scale per output column keeps short texts' vectors at
        # cosine ~0.98 of fp32; one scale per tensor drops some to ~0.90 (measured on MiniLM).
        quiet = _DropRecords("pre-processing before quantization")
        logging.getLogger().addFilter(quiet)  # onnxruntime advises this through the root logger
        try:
            # The quantizer writes scratch files (sym_shape_infer_temp.onnx, a <uuid>.data)
            # into the working directory: give it the cache folder, not the user's. (Not
            # thread-safe, like any chdir; this runs once per machine, under the export lock.)
            with contextlib.chdir(partial.parent):
                quantize_dynamic(source, partial, weight_type=QuantType.QInt8, per_channel=True)
        except Exception as exc:  # as above: any failure means no quantised graph
            raise ModelError(f"int8 quantisation of {source} failed: {exc}") from exc
        finally:
            logging.getLogger().removeFilter(quiet)

    _write_atomically(target, write)
    expected = OnnxEmbedder(pipeline.folder, graph=source).embed(list(_PROBE_TEXTS))
    worst = _probe(pipeline, target, expected, minimum=0.95)
    _record(directory, "int8", {"probe_min_cosine_vs_fp32": worst})


class _DropRecords(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _probe(pipeline: Pipeline, graph: Path, expected: np.ndarray, *, minimum: float) -> float:
    """The lowest cosine between the graph's vectors and ``expected``; a graph below
    ``minimum`` is deleted and refused (it would silently change every search)."""
    got = OnnxEmbedder(pipeline.folder, graph=graph).embed(list(_PROBE_TEXTS), batch_size=8)
    worst = float(np.min(np.sum(got * expected, axis=1)))
    if worst < minimum:
        graph.unlink(missing_ok=True)
        raise OnnxUnsupportedError(
            f"the ONNX graph of {pipeline.folder} does not reproduce the model "
            f"(cosine {worst:.4f} < {minimum}); use embedder_backend = 'torch'"
        )
    return worst


# --- the embedder --------------------------------------------------------------------------


def default_threads() -> int:
    """CPUs this process may run on (affinity, as containers with cpusets set it), at most
    :data:`MAX_THREADS`. onnxruntime's own default counts the host's cores instead."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(available, MAX_THREADS))


class OnnxEmbedder:
    """Embeds text with an ONNX export of a sentence-transformers folder; vectors are
    L2-normalised float32 and match the torch pipeline's (cosine >= 0.9999 for fp32).

    Safe to call from several threads: the tokenizers are configured once and never changed,
    and inference runs one batch at a time (each batch already uses every intra-op thread), so
    a short query waits for at most one batch of a long ingest, not for all of it."""

    def __init__(
        self,
        folder: str | Path,
        *,
        uri: str | None = None,
        variant: Variant = "fp32",
        name: str | None = None,
        cache_root_dir: Path | None = None,
        graph: Path | None = None,
        threads: int | None = None,
    ) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise OnnxUnsupportedError(f"the ONNX backend needs tokenizers: {exc}") from exc
        if importlib.util.find_spec("onnxruntime") is None:  # imported when first used
            raise OnnxUnsupportedError(
                "the ONNX backend needs onnxruntime: pip install onnxruntime"
            )
        self._pipeline = pipeline = read_pipeline(folder)
        self._uri = uri or f"st:{pipeline.folder}"
        self._variant = variant
        checked = graph is None
        if graph is None:
            graph = ensure_graph(pipeline.folder, variant, name=name, cache_root_dir=cache_root_dir)
        self.graph = graph

        tokenizer_file = str(pipeline.transformer / "tokenizer.json")
        # Embedding: truncate to max_seq_length counting the special tokens (as
        # sentence-transformers does); the file's own fixed padding (128 for MiniLM) is
        # switched off: each batch is padded here, to its own longest text.
        self._tokenizer = Tokenizer.from_file(tokenizer_file)
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=pipeline.max_seq_length)
        # Counting: no truncation, no special tokens (the torch embedder's count_tokens).
        self._counter = Tokenizer.from_file(tokenizer_file)
        self._counter.no_padding()
        self._counter.no_truncation()
        padding = json.loads(Path(tokenizer_file).read_text(encoding="utf-8")).get("padding")
        self._pad_id = int((padding or {}).get("pad_id", 0))

        self._threads = threads or default_threads()
        # The session (the graph's weights and onnxruntime's arenas, ~180 MB for MiniLM) is
        # made by the first embedding call, not here: a server or a command that may never
        # embed starts sooner and smaller. A cached graph's SHA-256 was checked above, so a
        # damaged file is still found now; a graph given by the caller is opened now.
        self._session: Any = None
        self._inputs: list[str] = []
        self._lock = threading.Lock()
        if not checked:
            self._open_session()

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def variant(self) -> Variant:
        return self._variant

    @property
    def dimension(self) -> int:
        return self._pipeline.dimension

    @property
    def max_tokens(self) -> int:
        return self._pipeline.max_seq_length

    def _prepare(self, text: str) -> str:
        return text.lower() if self._pipeline.do_lower_case else text

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
            raise TypeError(f"embed() takes a sequence of strings, not {type(texts).__name__}")
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("embed() takes a sequence of strings; some items are not str")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch([self._prepare(t) for t in texts])
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        # Longest first, so that each batch holds texts of similar length and is padded to
        # little more than its own texts (and the largest batch comes first).
        order = np.argsort(-lengths, kind="stable")
        for batch in plan_batches(lengths[order], batch_size):
            rows = order[batch]
            out[rows] = self._embed_batch([encodings[i] for i in rows], int(lengths[rows[0]]))
        return out

    def _embed_batch(self, encodings: Sequence[Any], width: int) -> np.ndarray:
        batch = len(encodings)
        ids = np.full((batch, width), self._pad_id, dtype=np.int64)
        mask = np.zeros((batch, width), dtype=np.int64)
        types = np.zeros((batch, width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            mask[row, :n] = 1
            types[row, :n] = encoding.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        with self._lock:
            session = self._session or self._open_session()
            (tokens,) = session.run(None, {n: feeds[n] for n in self._inputs})
        return _normalize(_pool(np.asarray(tokens, dtype=np.float32), mask, self._pipeline.pooling))

    def _open_session(self) -> Any:
        """The inference session, made on first use (called under the lock)."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: no warnings about unused initialisers
        spin = "1" if IDLE_THREADS_SPIN else "0"  # see IDLE_THREADS_SPIN
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        try:
            session = onnxruntime.InferenceSession(
                str(self.graph), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's own exception types: a bad or missing file
            raise ModelError(f"cannot load the ONNX graph {self.graph}: {exc}") from exc
        self._inputs = [i.name for i in session.get_inputs()]
        self._session = session
        return session

    def count_tokens(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"count_tokens() takes a string, not {type(text).__name__}")
        return len(self._counter.encode(self._prepare(text), add_special_tokens=False).ids)


def plan_batches(lengths: np.ndarray, batch_size: int) -> list[slice]:
    """Consecutive batches of texts sorted longest first (``lengths`` in tokens, descending):
    at most ``batch_size`` texts each, and cut early where padding to the batch's first text
    would waste more than :data:`MAX_PADDING` of the work, unless the batch is still under
    :data:`MIN_BATCH_TOKENS` padded tokens. Uniform lengths give plain ``batch_size`` slices.
    An fp32 vector does not depend on its batch (beyond float rounding); an int8 one does a
    little (dynamic quantisation scales each batch's activations), as it did before."""
    batches: list[slice] = []
    start = 0
    while start < len(lengths):
        width = max(int(lengths[start]), 1)
        real = width
        end = start + 1
        while end < len(lengths) and end - start < batch_size:
            padded = (end - start + 1) * width
            if padded > MIN_BATCH_TOKENS and padded > (1 + MAX_PADDING) * (real + lengths[end]):
                break
            real += int(lengths[end])
            end += 1
        batches.append(slice(start, end))
        start = end
    return batches


def _pool(tokens: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """sentence-transformers' Pooling, for the modes :data:`_SUPPORTED_POOLING` names."""
    weights = mask[:, :, None].astype(np.float32)
    if mode == "cls":
        return tokens[:, 0]  # right padding: the first position is always a real token
    if mode == "max":
        return np.where(weights > 0, tokens, -np.inf).max(axis=1).astype(np.float32)
    summed = (tokens * weights).sum(axis=1)
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    return summed / (counts if mode == "mean" else np.sqrt(counts))


def _normalize(vectors: np.ndarray) -> np.ndarray:
    """torch.nn.functional.normalize: divide by the L2 norm, at least 1e-12."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


# --- equivalence ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Equivalence:
    """How closely a candidate embedder reproduces a reference on the same texts."""

    min_cosine: float
    mean_cosine: float
    topk_overlap: float
    """Mean share of each query's top-k chunks (reference vectors) the candidate also ranks
    in its top-k: recall@k of the candidate against the reference."""
    same_topk: float
    """Share of queries whose top-k *set* is identical."""
    k: int

    def passes(self, *, min_cosine: float = 0.99, min_overlap: float = 1.0) -> bool:
        return self.min_cosine >= min_cosine and self.topk_overlap >= min_overlap


def top_k(chunks: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    scores = queries @ chunks.T
    k = min(k, chunks.shape[0])
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return [set(map(int, row)) for row in best]


def compare_embedders(
    reference: Embedder,
    candidate: Embedder,
    chunks: Sequence[str],
    queries: Iterable[str] = (),
    *,
    k: int = 10,
    batch_size: int = 32,
) -> Equivalence:
    """Embed ``chunks`` (and ``queries``) with both embedders: per-chunk cosine between the two
    vectors of each chunk, and how many of each query's top-``k`` chunks agree when each
    embedder searches its own vectors."""
    ref_chunks = reference.embed(chunks, batch_size=batch_size)
    cand_chunks = candidate.embed(chunks, batch_size=batch_size)
    cosines = np.sum(ref_chunks * cand_chunks, axis=1)
    query_list = list(queries)
    overlap = same = 1.0
    if query_list and len(chunks):
        ref_top = top_k(ref_chunks, reference.embed(query_list), k)
        cand_top = top_k(cand_chunks, candidate.embed(query_list), k)
        size = min(k, len(chunks))
        overlap = float(
            np.mean([len(a & b) / size for a, b in zip(ref_top, cand_top, strict=True)])
        )
        same = float(np.mean([a == b for a, b in zip(ref_top, cand_top, strict=True)]))
    return Equivalence(
        min_cosine=float(cosines.min()) if len(cosines) else 1.0,
        mean_cosine=float(cosines.mean()) if len(cosines) else 1.0,
        topk_overlap=overlap,
        same_topk=same,
        k=k,
    )
