"""References to versioned things: ``NAME``, ``NAME@latest``, ``NAME@7`` or ``NAME@TAG``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from slmops.errors import NotFoundError


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


V = TypeVar("V", bound=Versioned)


def split_ref(ref: str) -> tuple[str, str | None]:
    """``("handbook", "7")`` for ``handbook@7``; ``("handbook", None)`` for ``handbook``."""
    name, at, selector = ref.strip().partition("@")
    return name, (selector if at else None)


def select_version(
    kind: str,
    name: str,
    versions: Sequence[V],
    selector: str | None,
    tags: Callable[[], Mapping[str, int]],
) -> V:
    """The version ``selector`` names among ``versions`` (newest first, not empty)."""
    if not selector or selector == "latest":
        return versions[0]
    if selector.isdigit():
        for version in versions:
            if version.version == int(selector):
                return version
        raise NotFoundError(
            f"{kind} {name!r} has no version {selector} (versions 1-{versions[0].version})"
        )
    known = tags()
    if selector not in known:
        raise NotFoundError(
            f"{kind} {name!r} has no tag {selector!r} (tags: {', '.join(sorted(known)) or 'none'})"
        )
    return next(v for v in versions if v.version == known[selector])
