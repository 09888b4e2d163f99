"""Artifact storage through fsspec: a local folder by default, ``s3://`` and friends by URL."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import fsspec

from slmops.errors import NotFoundError, WorkspaceError
from slmops.store.owners import is_leftover, owner_tag

STAGING = ".writes"
"""The folder (below the store's root) where artifacts are written before they are moved
under their key. Names there are ``PID-MACHINE-UUID.tmp``: whose write it is, so a later
process can tell a killed writer's leftover from a live one's (see :meth:`sweep`)."""

# A temporary of put_bytes: owner-tagged ``PID-MACHINE-HEX32.tmp`` in STAGING (or, across
# filesystems, ``.PID-MACHINE-HEX32.tmp`` beside its target), or ``.HEX32.tmp`` beside its
# target as versions before the owner tag wrote them.
_TEMPORARY = re.compile(r"\.?(?:[0-9]{1,10}-[0-9a-f]{8}-)?[0-9a-f]{32}\.tmp")


@dataclass
class Swept:
    """What a sweep found: the leftovers it removed, and the temporaries it kept (a live
    writer's, or too young to tell)."""

    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    freed_bytes: int = 0

    def add(self, other: Swept) -> None:
        self.removed += other.removed
        self.kept += other.kept
        self.freed_bytes += other.freed_bytes


def _fsync_dir(path: Path) -> None:
    """Make a directory's entries (a file renamed into it, a folder made in it) durable."""
    if os.name == "nt":  # Windows cannot open a directory; NTFS journals its metadata
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durable(path: Path) -> None:
    """``mkdir -p`` that fsyncs the parent of every folder it makes."""
    if path.is_dir():
        return
    if path.parent != path:
        _makedirs_durable(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return  # another writer made it (and synced its parent)
    _fsync_dir(path.parent)


def _write_durable(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file and fsync it (its contents reach the disk before any
    rename makes them visible under the real name)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore:
    """Stores blobs under string keys (``corpora/handbook/v3.lance``) below one root URL."""

    def __init__(self, url: str) -> None:
        try:
            self._fs, self._root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise WorkspaceError(f"artifact store {url!r} cannot be opened: {exc}") from exc
        self.url = url
        # fsspec reports one protocol name or a tuple of aliases (s3fs: ("s3", "s3a")).
        protocol = self._fs.protocol
        self._protocol = protocol if isinstance(protocol, str) else protocol[0]
        self._fs.makedirs(self._root, exist_ok=True)

    def path(self, key: str) -> str:
        """The filesystem path (inside the store's filesystem) for ``key``."""
        # A NUL makes the filesystem raise ValueError; a backslash is a separator on Windows.
        if not key or key.startswith("/") or ".." in key.split("/") or "\x00" in key or "\\" in key:
            raise WorkspaceError(
                f"artifact key {key!r} must be a relative path without '..', NUL or '\\'"
            )
        return f"{self._root.rstrip('/')}/{key}"

    def uri(self, key: str) -> str:
        """A URL for ``key`` that fsspec (and LanceDB, MLflow, ...) can open."""
        path = self.path(key)
        return path if self._protocol in ("file", "local") else f"{self._protocol}://{path}"

    @property
    def local(self) -> bool:
        """Whether the store is a folder of this machine's filesystem."""
        return self._protocol in ("file", "local")

    def _staging(self) -> str:
        return f"{self._root.rstrip('/')}/{STAGING}"

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` atomically where the filesystem allows it; returns the URI.

        The bytes are written under an owner-tagged temporary name, then moved under the
        key, so a crash never leaves a half-written artifact under its real name. In a local
        store the file is fsynced before the move and its folder after it: a power cut
        leaves the old state or the new one, whole. Object stores (``s3://``...) make an
        object visible whole when its upload completes."""
        target = self.path(key)
        name = f"{owner_tag()}-{uuid.uuid4().hex}.tmp"
        if self.local:
            self._put_local(target, name, data)
            return self.uri(key)
        parent = target.rsplit("/", 1)[0]
        self._fs.makedirs(parent, exist_ok=True)
        tmp = f"{self._staging()}/{name}"
        self._fs.makedirs(self._staging(), exist_ok=True)
        with self._fs.open(tmp, "wb") as handle:
            handle.write(data)
        self._fs.mv(tmp, target)
        return self.uri(key)

    def _put_local(self, key_path: str, name: str, data: bytes) -> None:
        target = Path(key_path)
        staging = Path(self._staging())
        try:
            _makedirs_durable(target.parent)
            _makedirs_durable(staging)
            tmp = staging / name
            try:
                _write_durable(tmp, data)
                try:
                    tmp.replace(target)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    # The key's folder is another filesystem (a mount, a symlink): stage
                    # the write beside it instead, where a rename is atomic.
                    tmp.unlink()
                    tmp = target.parent / f".{name}"
                    _write_durable(tmp, data)
                    tmp.replace(target)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            _fsync_dir(target.parent)
        except OSError as exc:
            raise WorkspaceError(f"cannot write artifact {target}: {exc}") from exc

    def get_bytes(self, key: str) -> bytes:
        target = self.path(key)
        if not self._fs.exists(target):
            raise NotFoundError(f"artifact {key!r} does not exist in {self.url}")
        with self._fs.open(target, "rb") as handle:
            return handle.read()

    def exists(self, key: str) -> bool:
        return bool(self._fs.exists(self.path(key)))

    def delete(self, key: str) -> None:
        """Remove ``key``; a key that is already gone is no error, since two writers that
        lost the same race to a third both clean up the same checksum-named file."""
        target = self.path(key)
        if self._fs.exists(target):
            with contextlib.suppress(FileNotFoundError):
                self._fs.rm(target, recursive=True)

    # --- leftovers ------------------------------------------------------------------------

    def sweep(self, *, max_age_s: float, deep: bool = False) -> Swept:
        """Remove the temporaries that killed writers left: in the staging folder, those
        whose owner is gone from this machine, or, when their owner cannot be checked from
        here, older than ``max_age_s``; a live writer's are kept. ``deep`` also walks the
        whole store for temporaries written beside their target (by versions before the
        staging folder, or across filesystems): a full listing, too slow for every command
        on a big store. A store that is not local is only swept when ``deep``."""
        swept = Swept()
        if not deep:
            if self.local:
                swept.add(self._sweep_entries(self._local_entries(), max_age_s))
            return swept
        try:
            found = self._fs.find(self._root, detail=True)
        except (OSError, ValueError):
            return swept
        candidates = [
            (path, info)
            for path, info in found.items()
            if _TEMPORARY.fullmatch(path.rsplit("/", 1)[-1]) and info.get("type") == "file"
        ]
        swept.add(self._sweep_entries(candidates, max_age_s))
        return swept

    def _local_entries(self) -> list[tuple[str, dict[str, object]]]:
        try:
            with os.scandir(self._staging()) as listing:
                return [
                    (entry.path, {"mtime": entry.stat().st_mtime, "size": entry.stat().st_size})
                    for entry in listing
                    if entry.is_file(follow_symlinks=False)
                ]
        except OSError:  # no staging folder yet (or unreadable): nothing to sweep
            return []

    def _sweep_entries(
        self, entries: list[tuple[str, dict[str, object]]], max_age_s: float
    ) -> Swept:
        swept = Swept()
        now = time.time()
        for path, info in entries:
            name = path.rsplit("/", 1)[-1]
            if not _TEMPORARY.fullmatch(name):
                continue
            age = now - _mtime(info, now)
            if not is_leftover(name, age, max_age_s):
                swept.kept.append(path)
                continue
            try:
                self._fs.rm_file(path)
            except FileNotFoundError:
                continue  # its writer moved it in place, or another sweep took it
            except OSError:
                swept.kept.append(path)
                continue
            swept.removed.append(path)
            size = info.get("size")
            swept.freed_bytes += size if isinstance(size, int) else 0
        return swept


def _mtime(info: dict[str, object], default: float) -> float:
    """When an fsspec entry last changed, in seconds since the epoch (``default`` if the
    filesystem does not say)."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, int | float):
            return float(value)
        timestamp = getattr(value, "timestamp", None)
        if callable(timestamp):
            with contextlib.suppress(TypeError, ValueError, OSError):
                return float(timestamp())
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                from datetime import datetime

                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return default
