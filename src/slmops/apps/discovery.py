"""Finding stacks: a stack is a folder holding ``slmops.toml``.

A reference is a path (to the folder or the manifest), or a stack name, looked up as a
folder of that name: beside the stack that asks for it, in the current directory, then in
the workspace's ``stacks/`` folder (where ``slmops quickstart`` puts its stack).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slmops.apps.manifest import MANIFEST_FILE, LoadedManifest, ManifestError, load_manifest
from slmops.store.workspace import Workspace


def workspace_stacks(workspace: Workspace) -> Path:
    """The workspace's own stacks folder (quickstart, synth and red-team stacks live here)."""
    return workspace.home / "stacks"


def stack_roots(workspace: Workspace | None) -> list[Path]:
    roots = [Path.cwd()]
    if workspace is not None:
        roots.append(workspace_stacks(workspace))
    return roots


def find_stack(ref: str, roots: list[Path], *, near: Path | None = None) -> Path:
    """The manifest file ``ref`` names; raises ManifestError listing where it looked."""
    candidate = Path(ref).expanduser()
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate.resolve()
    if (candidate / MANIFEST_FILE).is_file() and ("/" in ref or ref.startswith(".")):
        return (candidate / MANIFEST_FILE).resolve()
    searched = ([near.parent] if near is not None else []) + roots
    for root in searched:
        manifest = root / ref / MANIFEST_FILE
        if manifest.is_file():
            return manifest.resolve()
    where = ", ".join(str(root) for root in dict.fromkeys(searched))
    raise ManifestError(
        f"no stack {ref!r}: no {ref}/{MANIFEST_FILE} in {where}; "
        f"create one with: slmops init {Path(ref).name} --template rag"
    )


@dataclass(frozen=True)
class FoundStack:
    path: Path
    manifest: LoadedManifest | None
    problem: str | None


def list_stacks(roots: list[Path]) -> list[FoundStack]:
    """Every stack folder directly under the roots, with its manifest or what is wrong."""
    found: dict[Path, FoundStack] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for manifest in sorted(root.glob(f"*/{MANIFEST_FILE}")):
            path = manifest.resolve()
            if path in found:
                continue
            try:
                found[path] = FoundStack(path, load_manifest(path), None)
            except ManifestError as exc:
                found[path] = FoundStack(path, None, str(exc))
    return list(found.values())
