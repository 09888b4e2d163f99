"""Model cards: the base's license read from the GGUF header, quickly and safely."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import gguf

from slmops.models.loading import BUILTIN_CHAT_MODELS, shipped_file
from slmops.registry.cards import _gguf_string, _license


def test_the_license_is_read_from_the_header_without_decoding_the_vocabulary() -> None:
    shipped = str(shipped_file(*BUILTIN_CHAT_MODELS["smollm2-135m"]))
    reader = gguf.GGUFReader(shipped)
    for key in ("general.license", "general.architecture", "tokenizer.chat_template"):
        assert _gguf_string(shipped, key) == reader.get_field(key).contents()
    started = time.perf_counter()
    assert _gguf_string(shipped, "no.such.key") is None  # steps over all 50k tokens
    assert time.perf_counter() - started < 2.0  # GGUFReader took seconds per registration
    assert _license(shipped) == "apache-2.0"


def test_a_damaged_file_gives_the_fallback_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    for data in (
        b"junk",
        b"GGUF" + struct.pack("<IQQ", 1, 0, 1),  # GGUF version 1: not read
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**62),  # huge key length
        b"GGUF" + struct.pack("<IQQ", 3, 0, 2),  # cut short
    ):
        path.write_bytes(data)
        assert _license(str(path)) == "see the base model's own card"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
    path.write_bytes(header + struct.pack("<Q", 4) + b"name" + struct.pack("<I", 4) + b"\0" * 4)
    assert _license(str(path)) == "not stated in the base file"
    assert _license(None) == "see the base model's own card"
