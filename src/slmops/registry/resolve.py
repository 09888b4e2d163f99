"""``registry:NAME@ALIAS`` model URIs, resolved to the version's weights (the entry point
``slmops.model_uri_resolvers: registry``). The version's files are checked against their
recorded SHA-256 each time the alias is resolved again."""

from __future__ import annotations

import threading

from slmops.core.runtime import current_workspace
from slmops.models.resolvers import ResolvedURI
from slmops.registry.store import ModelRegistry
from slmops.store.workspace import Workspace

_registries: dict[str, ModelRegistry] = {}
_lock = threading.Lock()


def registry_for(workspace: Workspace | None = None) -> ModelRegistry:
    """The registry of ``workspace``: else the current run's, else the default workspace."""
    chosen = workspace or current_workspace() or Workspace.open()
    key = str(chosen.home)
    with _lock:
        if key not in _registries:
            _registries[key] = ModelRegistry(chosen)
        return _registries[key]


def resolve_uri(uri: str) -> ResolvedURI:
    registry = registry_for()
    version = registry.verified(registry.resolve(uri))
    return ResolvedURI(uri, version.registry_uri, version.uri, version.sha256)
