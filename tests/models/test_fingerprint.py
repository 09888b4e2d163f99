"""Model digests: exact, cached by size and modification time, tolerant of a broken cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from slmops.models import fingerprint
from slmops.models.fingerprint import cache_file, model_digest


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_a_file_digest_is_its_sha256_and_is_computed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"weights")
    expected = "sha256:" + hashlib.sha256(b"weights").hexdigest()
    assert model_digest(f"gguf:{weights}") == expected
    assert cache_file().is_file()
    calls: list[Path] = []
    real = fingerprint.file_sha256
    monkeypatch.setattr(fingerprint, "file_sha256", lambda p: calls.append(p) or real(p))
    assert model_digest(f"gguf:{weights}") == expected
    assert calls == []  # unchanged size and mtime: read from the cache
    weights.write_bytes(b"other weights")
    assert model_digest(f"gguf:{weights}") != expected and calls == [weights]


def test_a_folder_digest_covers_every_file_and_its_name(tmp_path: Path) -> None:
    folder = tmp_path / "embedder"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "weights.bin").write_bytes(b"abc")
    first = model_digest(f"st:{folder}")
    (folder / "sub" / "weights.bin").rename(folder / "sub" / "renamed.bin")
    assert model_digest(f"st:{folder}") != first


def test_remote_and_missing_models_have_no_digest_and_a_broken_cache_is_ignored(
    tmp_path: Path,
) -> None:
    assert model_digest("openai:http://127.0.0.1:9/v1#m") is None
    assert model_digest(f"gguf:{tmp_path / 'absent.gguf'}") is None
    cache_file().parent.mkdir(parents=True)
    cache_file().write_text("{not json")
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"w")
    assert model_digest(f"gguf:{weights}") == "sha256:" + hashlib.sha256(b"w").hexdigest()
