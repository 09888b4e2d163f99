"""Resolving a stack's versioned references, and the lock file that pins them.

``slmops stack lock`` writes ``slmops.lock`` beside the manifest: every corpus and prompt
reference resolved to a concrete version (``docs@latest`` -> ``docs@3``), each local model's
weights by digest, with the manifest's hash. A stack with a lock runs on exactly those
versions whatever is ingested later, and refuses to run on other weights; a lock made for an
older manifest is refused rather than silently half-applied.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from slmops.apps.manifest import LoadedManifest, ManifestError
from slmops.core.runtime import resolving_in
from slmops.data.corpus import Corpora, CorpusVersion, corpora_for
from slmops.errors import NotFoundError, SlmopsError, UnknownModelError
from slmops.models.fingerprint import model_digest
from slmops.models.resolvers import resolve_uri
from slmops.models.uri import parse_model_uri
from slmops.prompts.registry import PromptRegistry, PromptVersion
from slmops.store.workspace import Workspace

LOCK_FILE = "slmops.lock"


class StackLock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stack: str
    manifest_sha256: str
    locked_at: float
    models: dict[str, str]
    corpora: dict[str, str]
    prompts: dict[str, str]
    # sha256 of each model's weights (None: a remote server); absent in locks made before
    model_digests: dict[str, str | None] = {}
    # what a model URI that names another resolved to (registry:x@champion -> registry:x@3)
    model_versions: dict[str, str] = {}


@dataclass(frozen=True)
class Resolved:
    """What a stack runs on: concrete corpus and prompt versions, model URIs and the digests
    of their weights."""

    models: dict[str, str]
    corpora: dict[str, CorpusVersion]
    prompts: dict[str, PromptVersion]
    locked: bool
    model_digests: dict[str, str | None]

    def corpus_ref(self, alias: str) -> str:
        version = self.corpora[alias]
        return f"{version.corpus}@{version.version}"

    def summary(self) -> dict[str, dict[str, str]]:
        return {
            "models": dict(self.models),
            "corpora": {alias: self.corpus_ref(alias) for alias in self.corpora},
            "prompts": {alias: p.ref for alias, p in self.prompts.items()},
            "model_digests": {a: d for a, d in self.model_digests.items() if d is not None},
        }


def lock_path(loaded: LoadedManifest) -> Path:
    return loaded.directory / LOCK_FILE


def read_lock(loaded: LoadedManifest) -> StackLock | None:
    """The stack's lock, or None without one; a stale or broken lock is an error."""
    path = lock_path(loaded)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        lock = StackLock.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise ManifestError(
            f"{path}: not a valid lock file ({str(exc).splitlines()[0]}); "
            f"run: slmops stack lock {loaded.directory}"
        ) from None
    if lock.manifest_sha256 != loaded.sha256:
        raise ManifestError(
            f"{path} was made for an earlier version of {loaded.path.name}; "
            f"run: slmops stack lock {loaded.directory}"
        )
    return lock


def _corpus(corpora: Corpora, alias: str, ref: str, loaded: LoadedManifest) -> CorpusVersion:
    name = ref.partition("@")[0]
    try:
        return corpora.resolve(ref)
    except NotFoundError as exc:
        hint = ""
        if name not in corpora.names():
            hint = f"; ingest documents with: slmops data ingest PATH --corpus {name}"
        raise ManifestError(f"{loaded.path}: corpora.{alias}: {exc}{hint}") from None


def _prompt(
    registry: PromptRegistry, alias: str, ref: str, loaded: LoadedManifest
) -> PromptVersion:
    try:
        return registry.get(ref)
    except NotFoundError as exc:
        raise ManifestError(f"{loaded.path}: prompts.{alias}: {exc}") from None


def resolve(
    loaded: LoadedManifest,
    workspace: Workspace,
    *,
    use_lock: bool = True,
    models: Mapping[str, str] | None = None,
) -> Resolved:
    """Resolve every reference (through the lock when there is one and ``use_lock``);
    ``models`` replaces model URIs by alias (to try another model without editing files)."""
    manifest = loaded.manifest
    lock = read_lock(loaded) if use_lock else None
    corpus_refs = lock.corpora if lock else manifest.corpora
    prompt_refs = lock.prompts if lock else manifest.prompts
    unknown = sorted(set(models or {}) - set(manifest.models))
    if unknown:
        raise ManifestError(
            f"{loaded.path}: no model alias {', '.join(unknown)} to replace "
            f"(aliases: {', '.join(sorted(manifest.models)) or 'none'})"
        )
    chosen = {**manifest.models, **(models or {})}
    for alias, uri in chosen.items():
        try:
            parse_model_uri(uri)
        except UnknownModelError as exc:
            raise ManifestError(f"{loaded.path}: models.{alias}: {exc}") from None
    with resolving_in(workspace):  # registry: URIs resolve in this workspace
        digests = {alias: _digest(alias, uri, loaded) for alias, uri in chosen.items()}
        pinned_versions = _versions(chosen, loaded)
    if lock is not None:
        for alias, locked_version in lock.model_versions.items():
            if alias in (models or {}):
                continue
            now = pinned_versions.get(alias)
            if now is None:
                continue  # the manifest no longer names a registry model here
            if now != locked_version:
                raise ManifestError(
                    f"{loaded.path}: models.{alias}: {chosen[alias]} now resolves to {now}, "
                    f"the lock pinned {locked_version}; run: slmops stack lock "
                    f"{loaded.directory}"
                )
            chosen[alias] = locked_version  # a locked stack runs its version, not the alias
        for alias, pinned in lock.model_digests.items():
            overridden = alias in (models or {})
            if pinned is not None and not overridden and digests.get(alias) != pinned:
                raise ManifestError(
                    f"{loaded.path}: models.{alias}: the weights of {chosen[alias]} are not "
                    f"the ones the lock pinned ({pinned[:19]}..., now "
                    f"{(digests.get(alias) or 'missing')[:19]}...); run: slmops stack lock "
                    f"{loaded.directory}"
                )
    corpora = corpora_for(workspace)
    registry = PromptRegistry(workspace)
    return Resolved(
        models=chosen,
        corpora={a: _corpus(corpora, a, ref, loaded) for a, ref in corpus_refs.items()},
        prompts={a: _prompt(registry, a, ref, loaded) for a, ref in prompt_refs.items()},
        locked=lock is not None,
        model_digests=digests,
    )


def _versions(models: Mapping[str, str], loaded: LoadedManifest) -> dict[str, str]:
    """For URIs that name other URIs (registry aliases): the version each resolves to now."""
    found = {}
    for alias, uri in models.items():
        try:
            resolved = resolve_uri(uri)
        except SlmopsError as exc:
            raise ManifestError(f"{loaded.path}: models.{alias}: {exc}") from None
        if resolved.pinned != uri:
            found[alias] = resolved.pinned
    return found


def _pinned(
    models: Mapping[str, str], loaded: LoadedManifest, workspace: Workspace
) -> dict[str, str]:
    with resolving_in(workspace):
        return _versions(models, loaded)


def _digest(alias: str, uri: str, loaded: LoadedManifest) -> str | None:
    try:
        return model_digest(uri)
    except (OSError, SlmopsError) as exc:  # a model that cannot be found fails when it loads
        raise ManifestError(f"{loaded.path}: models.{alias}: {exc}") from None


def write_lock(loaded: LoadedManifest, workspace: Workspace) -> StackLock:
    """Pin every reference of the manifest (ignoring any existing lock) and write the lock
    atomically, so a crash never leaves half a file."""
    resolved = resolve(loaded, workspace, use_lock=False)
    summary = resolved.summary()
    lock = StackLock(
        stack=loaded.name,
        manifest_sha256=loaded.sha256,
        locked_at=time.time(),
        models=summary["models"],
        corpora=summary["corpora"],
        prompts=summary["prompts"],
        model_digests=dict(resolved.model_digests),
        model_versions=_pinned(resolved.models, loaded, workspace),
    )
    path = lock_path(loaded)
    partial = path.with_suffix(".lock.partial")
    partial.write_text(json.dumps(lock.model_dump(), indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return lock
