"""Helpers for stack tests."""

from __future__ import annotations

from pathlib import Path


def write_manifest(directory: Path, name: str, text: str) -> Path:
    folder = directory / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "slmops.toml"
    path.write_text(text, encoding="utf-8")
    return path
