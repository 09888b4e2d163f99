"""What every parser fuzzer shares: the property, a hang guard, hostile values, a TOML writer.

The property: a parser of user input returns a value, or raises the one
:class:`~slmops.errors.SlmopsError` subclass it documents, with a message; never another
exception type, and never a hang. :func:`parses_or_fails` checks it for one call.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from hypothesis import strategies as st

from slmops.errors import SlmopsError

T = TypeVar("T")

HANG_S = float(os.environ.get("SLMOPS_FUZZ_HANG_S", "20"))
"""How long one parse may run before it counts as a hang (Hypothesis' deadline only
measures a call once it has returned; this one interrupts it)."""


class HangError(AssertionError):
    """A parse ran past :data:`HANG_S`."""


@contextmanager
def time_limit(seconds: float = HANG_S) -> Iterator[None]:
    """Interrupt the block after ``seconds`` with :class:`HangError` (SIGALRM: main thread, POSIX;
    elsewhere the block just runs)."""
    if (
        not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise HangError(f"the parser ran for more than {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def parses_or_fails(
    call: Callable[..., T],
    *args: Any,
    error: type[SlmopsError] = SlmopsError,
    **kwargs: Any,
) -> T | SlmopsError:
    """``call(*args, **kwargs)``'s value, or the ``error`` it raised (checked to say what is
    wrong). Any other exception, or a hang, fails the test with its traceback."""
    try:
        with time_limit():
            return call(*args, **kwargs)
    except error as exc:
        message = str(exc).strip()
        assert message, f"{type(exc).__name__} raised without a message"
        return exc


# --- hostile values ------------------------------------------------------------------------

HUGE_INTS = st.sampled_from([2**63, -(2**63) - 1, 10**30, -(10**30), 2**31, -1, 0])
ODD_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324, 0.1])
ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\n",
        "\t\r\n",
        "\x00",
        "a\x00b",
        "\u200b",  # zero-width space
        "\ufeff",  # a byte-order mark
        "e\u0301",  # a combining accent
        "\U0001f600",
        "Ω≈ç√∫",
        "../../etc/passwd",
        "'; DROP TABLE x; --",
        "{{ 7*7 }}",
        "${name}",
        "x" * 10_000,
        "latest",
        "1",
        "local:smollm2-135m",
        "input.question",
        "settings.answer",
    ]
)
SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    ODD_FLOATS,
    st.text(max_size=20),
    ODD_TEXT,
)


def json_values(keys: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Any]:
    """Any JSON-ish value (NaN and infinities included), nested a few levels."""
    key_strategy = keys if keys is not None else st.text(max_size=8)
    return st.recursive(
        SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(key_strategy, inner, max_size=4)
        ),
        max_leaves=12,
    )


def deeply_nested_json(depth: int, kind: str = "list") -> str:
    """``[[[...]]]`` or ``{"a": {"a": ...}}`` ``depth`` levels deep."""
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a": ' * depth + "1" + "}" * depth


# --- TOML ---------------------------------------------------------------------------------

_TOML_FLOATS = {math.inf: "inf", -math.inf: "-inf"}


def toml_key(key: str) -> str:
    return json.dumps(key)  # a basic string: JSON's escapes are TOML's


def toml_value(value: Any) -> str:
    """A value as inline TOML (tables as ``{k = v}``); None, which TOML lacks, as ``""``."""
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return _TOML_FLOATS.get(value, repr(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


def toml_document(data: dict[str, Any]) -> str:
    """A document with one ``key = value`` line per top-level key."""
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in data.items())


def jsonl_line(value: Any) -> str:
    """One JSONL line as a file holds it: UTF-8 text, with a lone surrogate (which no UTF-8
    file can hold) written as a ``\\udxxx`` escape instead."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True, default=str)
    return text


def files_under(folder: Any) -> list[str]:
    """Every file below ``folder`` (a Path), as sorted relative paths: what a failed store
    must leave unchanged."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


NAMES = st.sampled_from(
    [
        *("fuzz", "fuzz", "fuzz-2", "a_b", "x" * 64),  # valid
        *("", "Fuzz", "-x", "x" * 65, "fuzz\n", "a/b", "a@1", "é", "fuzz\x00"),  # not
    ]
)
"""Names for the things a fuzzer stores: mostly valid, some not (checked by name_problem)."""


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` nine times in ten, else ``bad``: hostile values one at a time, so most
    generated documents get past their first check and reach the deeper ones."""
    return st.integers(0, 9).flatmap(lambda roll: bad if roll == 9 else good)
