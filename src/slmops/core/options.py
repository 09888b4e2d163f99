"""Retry settings shared by every step kind."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Retry:
    """Retry a failing step: ``attempts`` in all, waiting ``backoff_s`` then doubling up to
    ``max_backoff_s``, for exceptions of the types in ``on`` (invalid *input* never retries)."""

    attempts: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("Retry.attempts must be at least 1")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("Retry backoff must not be negative")
