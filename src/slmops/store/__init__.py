"""The workspace: a metadata database (SQLAlchemy) and an artifact folder (fsspec)."""

from slmops.store.settings import Settings, load_settings
from slmops.store.workspace import Workspace, resolve_home

__all__ = ["Settings", "Workspace", "load_settings", "resolve_home"]
