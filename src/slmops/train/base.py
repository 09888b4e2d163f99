"""Base models for fine-tuning: a model URI turned into a transformers checkpoint folder.

GGUF bases (the shipped ``local:smollm2-135m``, any ``gguf:`` file) are dequantized once into
the workspace, keyed by the file's SHA-256, so later runs start at once. The folder records
the GGUF it came from (``slmops-source.json``): export copies that file's tokenizer and
metadata back into the fine-tuned GGUF, so llama.cpp tokenizes exactly as it did for the base.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from slmops.errors import ModelError
from slmops.models.conversion import gguf_to_transformers
from slmops.models.fingerprint import model_digest, weights_path
from slmops.models.uri import parse_model_uri
from slmops.store.workspace import Workspace

SOURCE_FILE = "slmops-source.json"


@dataclass(frozen=True)
class BaseCheckpoint:
    """A base ready to train: the URI asked for, its weights' digest, the checkpoint folder
    and, when it came from one, the GGUF file (the template for exports)."""

    uri: str
    digest: str
    checkpoint: Path
    gguf: Path | None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "uri": self.uri,
            "digest": self.digest,
            "checkpoint": str(self.checkpoint),
            "gguf": str(self.gguf) if self.gguf else None,
        }


def source_gguf(checkpoint: Path) -> Path | None:
    """The GGUF file a checkpoint folder was made from, if slmops made it."""
    try:
        recorded = json.loads((checkpoint / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    path = Path(recorded.get("gguf") or "")
    return path if path.is_file() else None


def prepare_base(uri: str, workspace: Workspace) -> BaseCheckpoint:
    """The checkpoint for ``uri`` (``local:``, ``gguf:`` or ``hf:``), dequantizing a GGUF the
    first time it is used."""
    parsed = parse_model_uri(uri)
    if parsed.scheme not in ("local", "gguf", "hf"):
        raise ModelError(
            f"cannot fine-tune {uri!r}: a base must be local weights (local:, gguf: or hf:)"
        )
    path = weights_path(uri)
    digest = model_digest(uri)
    if path is None or digest is None:
        raise ModelError(f"base model {uri!r}: no weights at {path or 'that name'}")
    if parsed.scheme == "hf":
        if not (path / "config.json").is_file():
            raise ModelError(f"base model {uri!r}: {path} is not a checkpoint (no config.json)")
        return BaseCheckpoint(uri, digest, path, source_gguf(path))
    target = workspace.home / "models" / "dequantized" / digest.removeprefix("sha256:")[:16]
    if not (target / SOURCE_FILE).is_file():
        _dequantize(path, target, digest)
    return BaseCheckpoint(uri, digest, target, path)


def _dequantize(gguf: Path, target: Path, digest: str) -> None:
    """Write the checkpoint beside its final place, then rename: a crash leaves no half
    folder under the real name."""
    partial = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        gguf_to_transformers(gguf, partial)
        (partial / SOURCE_FILE).write_text(
            json.dumps({"gguf": str(gguf.resolve()), "digest": digest}), encoding="utf-8"
        )
        partial.rename(target)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if (target / SOURCE_FILE).is_file():  # another process finished it first
            return
        raise ModelError(f"cannot write the dequantized base into {target}: {exc}") from exc
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
