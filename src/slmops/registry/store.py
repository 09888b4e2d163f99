"""The model registry, on MLflow's Model Registry: the one source of truth for versions and
aliases. A version registered or aliased with MLflow's own client (or its UI) is seen here.

Registering copies the weights into the workspace (``models/registry/NAME/KEY/``), so a
version's files do not change with their source; their SHA-256 is recorded on the version
and checked whenever the version is resolved. A version holds a loadable model URI (tag
``slmops.uri``), the format, and its lineage: base model and digest, training run, dataset,
prompt and corpus versions. Its MLflow description is its model card.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from slmops.errors import ModelError, NotFoundError, SlmopsError, UnknownModelError
from slmops.store.names import name_problem
from slmops.store.workspace import Workspace
from slmops.train.tracking import Tracker

if TYPE_CHECKING:
    from slmops.models.uri import ModelURI

# slmops.models (fingerprints, URIs, the built-in models) is imported where registering or
# verifying weights needs it: reading versions and aliases (``slmops model list``, the UI)
# does not, and importing it loads the model backends' modules.

URI_TAG = "slmops.uri"
SHA_TAG = "slmops.sha256"


class RegistryError(SlmopsError):
    """A registry name, version or alias is unknown, or a version cannot be used."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    uri: str  # what slmops loads
    sha256: str | None  # sha256:... of the weights; None for a remote server
    source: str  # MLflow's source: the folder holding the weights
    run_id: str | None  # the training run it came from
    aliases: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)
    card: str = ""  # Markdown: the version's model card
    created_at: float = 0.0

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def registry_uri(self) -> str:
        """A URI that names exactly this version."""
        return f"registry:{self.ref}"


def split_model_ref(ref: str) -> tuple[str, str | None]:
    """``("handbook", "champion")`` for ``handbook@champion`` (``registry:`` optional)."""
    name, at, selector = ref.removeprefix("registry:").strip().partition("@")
    return name, (selector if at and selector != "latest" else None)


def _is_missing(exc: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or (
        "not found" in str(exc).lower() or "does not exist" in str(exc).lower()
    )


class ModelRegistry:
    """Registered models of a workspace (keyword-only calls, as in MLflow's client)."""

    def __init__(self, workspace: Workspace, tracker: Tracker | None = None) -> None:
        self.workspace = workspace
        self.tracker = tracker or Tracker(workspace)
        self.client = self.tracker.client

    # --- registering ---------------------------------------------------------------------

    def register(
        self,
        *,
        name: str,
        uri: str,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        card: str = "",
    ) -> ModelVersion:
        """A new version of ``name`` holding a copy of ``uri``'s weights (or, for a remote
        server, its address)."""
        from slmops.models.fingerprint import model_digest
        from slmops.models.uri import parse_model_uri

        problem = name_problem("model", name)
        if problem:
            raise RegistryError(problem)
        try:
            parsed = parse_model_uri(uri)
        except UnknownModelError as exc:
            raise RegistryError(str(exc)) from None
        if parsed.scheme == "registry":
            raise RegistryError(f"{uri} is already registered; register what it points to")
        if parsed.scheme == "st":
            raise RegistryError("the registry keeps chat models; st: names an embedder")
        folder, stored = self._store_weights(name, parsed)
        digest = model_digest(stored) if parsed.scheme != "openai" else None
        recorded = {
            URI_TAG: stored,
            SHA_TAG: digest or "",
            "slmops.format": _format(parsed),
            "slmops.registered_from": uri,
            **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (tags or {}).items()},
        }
        try:
            self._ensure_model(name)
            created = self.client.create_model_version(
                name,
                folder,
                run_id=run_id,
                tags=recorded,
                description=card or None,
            )
        except Exception as exc:
            if folder.startswith("file:"):  # the copy belongs to no version: remove it
                shutil.rmtree(urlparse(folder).path, ignore_errors=True)
            raise RegistryError(f"cannot register {name}: {exc}") from exc
        return self.get(name=name, version=int(created.version))

    def _ensure_model(self, name: str) -> None:
        try:
            self.client.get_registered_model(name)
        except Exception as exc:  # MLflow raises MlflowException for a missing model
            if not _is_missing(exc):
                raise
            try:
                self.client.create_registered_model(name, tags={"slmops.kind": "model"})
            except Exception as again:  # made by a concurrent first registration: fine
                if "ALREADY_EXISTS" not in str(getattr(again, "error_code", "")):
                    raise

    def _store_weights(self, name: str, parsed: ModelURI) -> tuple[str, str]:
        """(MLflow source, loadable URI) after copying the weights into the workspace."""
        from slmops.models.loading import BUILTIN_CHAT_MODELS, shipped_file

        if parsed.scheme == "openai":
            return parsed.location, str(parsed)
        files: dict[str, Path] = {}
        if parsed.scheme == "local":
            if parsed.location not in BUILTIN_CHAT_MODELS:
                raise RegistryError(f"no built-in chat model {parsed.location!r}")
            files["model.gguf"] = shipped_file(*BUILTIN_CHAT_MODELS[parsed.location])
        else:
            files["model.gguf" if parsed.scheme == "gguf" else "model"] = Path(
                parsed.location
            ).expanduser()
        if parsed.adapter:
            files["adapter.gguf"] = Path(parsed.adapter).expanduser()
        for path in files.values():
            if not path.exists():
                raise RegistryError(f"cannot register {parsed}: {path} does not exist")
        target = self.workspace.home / "models" / "registry" / name / uuid.uuid4().hex[:16]
        partial = target.with_name(f".{target.name}.partial")
        try:
            partial.mkdir(parents=True)
            for stored_name, path in files.items():
                _copy(path, partial / stored_name)
            partial.rename(target)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise RegistryError(f"cannot copy the weights into {target}: {exc}") from exc
        if parsed.scheme == "hf":
            uri = f"hf:{target / 'model'}"
        else:
            uri = f"gguf:{target / 'model.gguf'}"
            if parsed.adapter:
                uri += f"+adapter:{target / 'adapter.gguf'}"
        return target.as_uri(), uri

    # --- reading -------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    def aliases(self, name: str) -> dict[str, int]:
        try:
            model = self.client.get_registered_model(name)
        except Exception as exc:
            if _is_missing(exc):
                known = ", ".join(self.names()) or "none yet"
                raise NotFoundError(f"no registered model {name!r} (models: {known})") from None
            raise
        return {alias: int(version) for alias, version in (model.aliases or {}).items()}

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, newest first."""
        aliases = self.aliases(name)  # also: a clear error for an unknown name
        found = self.client.search_model_versions(f"name = '{name}'")
        return sorted(
            (self._version(v, aliases) for v in found), key=lambda v: v.version, reverse=True
        )

    def get(self, *, name: str, version: int) -> ModelVersion:
        aliases = self.aliases(name)
        try:
            found = self.client.get_model_version(name, str(version))
        except Exception as exc:
            if _is_missing(exc):
                raise NotFoundError(f"model {name!r} has no version {version}") from None
            raise
        return self._version(found, aliases)

    def resolve(self, ref: str) -> ModelVersion:
        """``NAME@ALIAS``, ``NAME@N`` or ``NAME`` (the latest version)."""
        name, selector = split_model_ref(ref)
        if selector is None:
            versions = self.versions(name)
            if not versions:
                raise NotFoundError(f"model {name!r} has no versions yet")
            return versions[0]
        if selector.isdigit():
            return self.get(name=name, version=int(selector))
        aliases = self.aliases(name)
        if selector not in aliases:
            raise NotFoundError(
                f"model {name!r} has no alias {selector!r} "
                f"(aliases: {', '.join(f'{a}->{v}' for a, v in sorted(aliases.items())) or 'none'})"
            )
        return self.get(name=name, version=aliases[selector])

    def _version(self, found: Any, aliases: Mapping[str, int]) -> ModelVersion:
        return version_from(found, aliases)

    def verified(self, version: ModelVersion) -> ModelVersion:
        """``version``, after checking its weights are there and unchanged."""
        from slmops.models.fingerprint import model_digest

        if version.sha256 is None:
            return version
        try:
            actual = model_digest(version.uri)
        except (OSError, ModelError) as exc:
            raise RegistryError(f"the weights of {version.ref} cannot be read: {exc}") from exc
        if actual is None:
            raise RegistryError(f"the weights of {version.ref} are gone ({version.uri})")
        if actual != version.sha256:
            raise RegistryError(
                f"the weights of {version.ref} changed since it was registered "
                f"({version.sha256[:19]}... now {actual[:19]}...)"
            )
        return version

    # --- cards and tags ------------------------------------------------------------------

    def set_card(self, version: ModelVersion, card: str) -> None:
        self.client.update_model_version(version.name, str(version.version), description=card)

    def tag(self, version: ModelVersion, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(version.name, str(version.version), key, value)

    def set_alias(self, *, name: str, alias: str, version: int | None) -> None:
        """Point ``alias`` at ``version`` (None removes it). Promotion goes through
        :mod:`slmops.registry.promotion`, which gates and logs this."""
        if version is None:
            self.client.delete_registered_model_alias(name, alias)
        else:
            self.client.set_registered_model_alias(name, alias, str(version))


def version_from(found: Any, aliases: Mapping[str, int]) -> ModelVersion:
    """A :class:`ModelVersion` from one of MLflow's (``name``, ``version``, ``tags``,
    ``source``, ``run_id``, ``description``, ``creation_timestamp``: an MLflow entity, or the
    rows :mod:`slmops.registry.listing` reads) and its model's aliases."""
    tags = dict(found.tags or {})
    number = int(found.version)
    uri = tags.get(URI_TAG) or _uri_from_source(found.name, number, found.source)
    return ModelVersion(
        name=found.name,
        version=number,
        uri=uri,
        sha256=tags.get(SHA_TAG) or None,
        source=found.source,
        run_id=found.run_id or None,
        aliases=tuple(sorted(a for a, v in aliases.items() if v == number)),
        tags=tags,
        card=found.description or "",
        created_at=(found.creation_timestamp or 0) / 1000,
    )


def _format(parsed: ModelURI) -> str:
    if parsed.scheme == "openai":
        return "openai"
    if parsed.scheme == "hf":
        return "hf"
    return "gguf+adapter" if parsed.adapter else "gguf"


def _uri_from_source(name: str, version: int, source: str) -> str:
    """A loadable URI for a version registered outside slmops: a GGUF file, or a folder
    holding one GGUF (or a transformers checkpoint)."""
    location = source
    if source.startswith("file:"):
        location = urlparse(source).path
    path = Path(location)
    if path.suffix == ".gguf" and path.is_file():
        return f"gguf:{path}"
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return f"gguf:{ggufs[0]}"
        if (path / "config.json").is_file():
            return f"hf:{path}"
    raise RegistryError(
        f"{name}@{version} was registered from {source!r}, where slmops finds no single GGUF "
        "file or checkpoint to load"
    )


def _copy(source: Path, target: Path) -> None:
    """A real copy (not a link): the version's bytes must not change with the source's."""
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
