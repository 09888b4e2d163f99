"""Sentence-transformers embedders, loaded from a local folder (never from a hub)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slmops.errors import ModelError, ModelUnavailableError


class SentenceTransformerEmbedder:
    """Embeds text with a sentence-transformers model folder; vectors are L2-normalised."""

    def __init__(self, path: str | Path, *, uri: str | None = None) -> None:
        folder = Path(path)
        if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
            raise ModelUnavailableError(f"{folder} is not a sentence-transformers model folder")
        # Offline by construction: a local folder needs no hub, and these make sure none is
        # contacted even for optional files.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # no "Loading weights" bar on every load

        try:
            self._model: Any = SentenceTransformer(str(folder), device="cpu")
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load embedder from {folder}: {exc}") from exc
        self._uri = uri or f"st:{folder}"
        self._lock = threading.Lock()
        # sentence-transformers 6 renamed the method; keep working with 5.x as well.
        get_dimension = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dimension = get_dimension()
        if not dimension:
            raise ModelError(f"{folder}: embedder reports no dimension")
        self._dimension = int(dimension)

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return int(self._model.max_seq_length)

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings, not one string")
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        # under the lock too: a fast tokenizer called from two threads at once mixes up the
        # padding and truncation settings of the other call (encode then fails)
        with self._lock:
            encoded = self._model.tokenizer(text, add_special_tokens=False, verbose=False)
        return len(encoded["input_ids"])
