"""Artifact storage through fsspec: a local folder by default, ``s3://`` and friends by URL."""

from __future__ import annotations

import uuid

import fsspec

from slmops.errors import NotFoundError, WorkspaceError


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

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` atomically where the filesystem allows it; returns the URI."""
        target = self.path(key)
        parent = target.rsplit("/", 1)[0]
        self._fs.makedirs(parent, exist_ok=True)
        # Write then move, so a crash never leaves a half-written artifact under its real name.
        tmp = f"{parent}/.{uuid.uuid4().hex}.tmp"
        with self._fs.open(tmp, "wb") as handle:
            handle.write(data)
        self._fs.mv(tmp, target)
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        target = self.path(key)
        if not self._fs.exists(target):
            raise NotFoundError(f"artifact {key!r} does not exist in {self.url}")
        with self._fs.open(target, "rb") as handle:
            return handle.read()

    def exists(self, key: str) -> bool:
        return bool(self._fs.exists(self.path(key)))

    def delete(self, key: str) -> None:
        target = self.path(key)
        if self._fs.exists(target):
            self._fs.rm(target, recursive=True)
