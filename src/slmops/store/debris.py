"""Leftovers of killed writers: scratch folders and temporary files nothing reads.

A write that is killed (``kill -9``, out of memory, a power cut) cannot remove its own
temporaries. Every scratch name slmops makes in a workspace names its owner
(``PID-MACHINE-...``, see :mod:`slmops.store.owners`), so a later process can remove what a
dead process of this machine left, at once, and what it cannot check (another machine's, a
name from before owners were named) once it is older than :data:`MAX_AGE_S`.

Where they are:

- ``WORKSPACE/.scratch/PID-MACHINE-XXXXXXXX/``: scratch folders (the weights a registration
  exports before they are copied into the registry);
- ``ARTIFACTS/.writes/PID-MACHINE-UUID.tmp``: artifacts being written (then moved under
  their key);
- deep only (a full walk): ``.HEX32.tmp`` beside an artifact (versions before ``.writes``),
  ``tmpXXXXXXXX/`` folders in the workspace (registration scratch before ``.scratch``) and
  ``*.partial`` files and folders of half-written checkpoints, model copies and reports,
  all by age only.

:meth:`Workspace.open` sweeps the first two (two folder listings); the deep sweep is
:func:`sweep` with ``deep=True``, for a maintenance command.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path

from slmops.store.artifacts import ArtifactStore, Swept
from slmops.store.owners import is_leftover, owner_in, owner_tag

log = logging.getLogger("slmops.store")

SCRATCH = ".scratch"
MAX_AGE_S = 24 * 3600.0
"""How old a leftover whose owner cannot be checked from here must be to be removed: far
longer than any write or export takes."""

_LEGACY_SCRATCH = re.compile(r"tmp[a-z0-9_]{8}")  # tempfile.TemporaryDirectory's names
_PARTIAL = re.compile(r".+\.partial")


def scratch_dir(home: Path) -> Path:
    """The workspace's scratch folder (made if needed): make scratch folders in it with
    :func:`scratch_prefix`, so a sweep can tell whose they are."""
    folder = home / SCRATCH
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def scratch_prefix() -> str:
    """``PID-MACHINE-``: the start of this process's scratch names (``tempfile``'s
    ``prefix``)."""
    return f"{owner_tag()}-"


def _newest_mtime(path: Path) -> float:
    """When anything in ``path`` (a file, or a folder's whole tree) last changed: a folder
    being filled by a live writer is young even when the folder itself is not."""
    try:
        newest = path.lstat().st_mtime
    except OSError:
        return time.time()
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, (Path(root) / name).lstat().st_mtime)
                except OSError:
                    continue
    return newest


def _remove(path: Path, swept: Swept) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            size = sum(
                (Path(root) / name).lstat().st_size
                for root, _, files in os.walk(path)
                for name in files
            )
            shutil.rmtree(path)
        else:
            size = path.lstat().st_size
            path.unlink()
    except FileNotFoundError:
        return  # removed meanwhile (by its writer, or another sweep)
    except OSError:
        swept.kept.append(str(path))
        return
    swept.removed.append(str(path))
    swept.freed_bytes += size


def _sweep_entry(path: Path, max_age_s: float, now: float, swept: Swept) -> None:
    # The age is only read when the owner cannot be checked (a walk of a folder's tree).
    age = (now - _newest_mtime(path)) if not _owned_here(path.name) else 0.0
    if is_leftover(path.name, age, max_age_s):
        _remove(path, swept)
    else:
        swept.kept.append(str(path))


def _owned_here(name: str) -> bool:
    owner = owner_in(name)
    return owner is not None and owner.local


def sweep(
    home: Path, artifacts: ArtifactStore, *, deep: bool = False, max_age_s: float = MAX_AGE_S
) -> Swept:
    """Remove the leftovers of killed writers in the workspace at ``home`` (see the module's
    docstring for where); a live writer's scratch is never removed. Returns what was
    removed and what was kept."""
    now = time.time()
    swept = Swept()
    try:
        entries = list((home / SCRATCH).iterdir())
    except OSError:
        entries = []  # no scratch folder yet
    for entry in entries:
        _sweep_entry(entry, max_age_s, now, swept)
    swept.add(artifacts.sweep(max_age_s=max_age_s, deep=deep))
    if deep:
        _sweep_deep(home, artifacts, max_age_s, now, swept)
    if swept.removed:
        log.info(
            "removed %d leftover(s) of killed writes (%d bytes): %s",
            len(swept.removed),
            swept.freed_bytes,
            ", ".join(swept.removed),
        )
    return swept


def _sweep_deep(
    home: Path, artifacts: ArtifactStore, max_age_s: float, now: float, swept: Swept
) -> None:
    """Leftovers of the names used before owners were named, and ``*.partial`` ones, by age."""
    try:
        top = list(home.iterdir())
    except OSError:
        return
    for entry in top:
        if _LEGACY_SCRATCH.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            _sweep_entry(entry, max_age_s, now, swept)
    # The artifact store, walked by its own sweep, is skipped here when it lies inside.
    store = Path(artifacts.path("x")).parent.resolve() if artifacts.local else None
    for root, dirs, files in os.walk(home):
        here = Path(root)
        if store is not None and here.resolve() == store:
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if d != SCRATCH]
        for name in [*dirs, *files]:
            if not _PARTIAL.fullmatch(name):
                continue
            path = here / name
            if name in dirs:
                dirs.remove(name)  # swept whole or kept whole: not walked into
            _sweep_entry(path, max_age_s, now, swept)
