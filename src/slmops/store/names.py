"""The one naming rule for things users name: corpora, prompts, tags, stacks."""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def name_problem(kind: str, value: str) -> str | None:
    """A message saying what is wrong with ``value`` as a ``kind`` name, or None if it is fine."""
    # fullmatch: with match() the '$' also matches before a final newline ("docs\n")
    if isinstance(value, str) and NAME_PATTERN.fullmatch(value):
        return None
    return (
        f"{kind} name {value!r} must be 1-64 lower-case letters, digits, '-' or '_', "
        "starting with a letter or digit"
    )


def tag_problem(value: str) -> str | None:
    """Tags name versions, so they must not look like a version number or ``latest``."""
    if name_problem("tag", value) or value == "latest" or value.isdigit():
        return (
            f"tag {value!r} must be lower-case letters, digits, '-' or '_', not a number "
            "or 'latest'"
        )
    return None
