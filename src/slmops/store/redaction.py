"""Redaction of personal data and secrets before text is stored (traces, feedback).

A :class:`Redactor` is built from built-in kinds (:data:`KINDS`: ``email``, ``phone``,
``api_key``) and custom regular expressions, and replaces every match with a placeholder
that names what was there: ``[REDACTED:email]``, ``[REDACTED:phone]``,
``[REDACTED:api_key]`` or ``[REDACTED:custom]``. A redactor with nothing configured is
falsy, so callers skip it (and every copy it would need) on their hot path::

    redactor = Redactor.from_settings(settings.redact, settings.redact_patterns)
    if redactor:
        text = redactor.redact(text)

The built-in patterns are practical heuristics, not validators: they aim to catch what
people paste into prompts while leaving numbers, dates, versions and ids alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from slmops.errors import ConfigError

KINDS: tuple[str, ...] = ("email", "phone", "api_key")
"""The built-in kinds of data a :class:`Redactor` can be told to remove."""

CUSTOM = "custom"
"""The placeholder kind of matches of a custom pattern."""


def placeholder(kind: str) -> str:
    """What a match of ``kind`` is replaced with, e.g. ``[REDACTED:email]``."""
    return f"[REDACTED:{kind}]"


# Text stored on spans is often JSON, where a newline is the two characters ``\n``: a match
# may start right after such an escape although the character before it is a letter, and
# must never start on the letter of the escape itself (``\[REDACTED...`` is invalid JSON).
def _start(chars: str) -> str:
    """A match starts here: not inside a run of ``chars``, or right after a JSON escape."""
    return rf"(?:(?<=\\[nrtbf])|(?<![{chars}\\]))"


_EMAIL = re.compile(
    _start(r"\w.%+\-") + r"[\w.%+\-]+@(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}(?![\w\-])"
)

# Phone numbers: international (+CC, then groups of digits), North American (555) 123-4567
# shapes, local 555-1234, and national numbers with a trunk 0 (020 7946 0958, 06 12 34 56
# 78). National forms need separators, so plain runs of digits (amounts, years, Unix times)
# stay, and the digit counts below keep dates (05.01.2026, 2026-11-30) and versions out.
_SEP = r"[ .\-]"
_PHONE = re.compile(
    r"(?:(?<=\\[nrtbf])|(?<![\w+\\]))(?<!\d[.\-])(?:"
    rf"(?P<intl>\+\d{{1,3}}(?:{_SEP}?\(\d{{1,4}}\))?(?:{_SEP}?\d{{1,5}}){{1,6}})"
    rf"|(?P<trunk>(?:\(0\d{{1,4}}\)|0\d{{1,4}})(?:{_SEP}?\d{{2,8}})(?:{_SEP}\d{{2,8}}){{0,3}})"
    rf"|(?P<nanp>(?:1{_SEP})?(?:\(\d{{3}}\){_SEP}?|\d{{3}}{_SEP})\d{{3}}{_SEP}\d{{4}})"
    r"|(?P<local>\d{3}-\d{4})"
    r")(?!\w|[.\-]\d)"
)
_PHONE_MIN_DIGITS = {"intl": 7, "trunk": 9, "nanp": 10, "local": 7}
_PHONE_MAX_DIGITS = 15  # E.164


def _is_phone(match: re.Match[str]) -> bool:
    if match.lastgroup == "trunk" and not re.search(r"[ .\-)]", match.group()):
        return False  # a national number needs a separator: 0123456789 is just a number
    digits = sum(c.isdigit() for c in match.group())
    return _PHONE_MIN_DIGITS[match.lastgroup or "intl"] <= digits <= _PHONE_MAX_DIGITS


_TOKEN_CHARS = r"A-Za-z0-9_\-"
_API_KEY = re.compile(
    # "Bearer <token>": the word stays, the token goes.
    r"(?P<keep>\b[Bb]earer\s+)(?=[A-Za-z0-9._~+/\-]*\d)[A-Za-z0-9._~+/\-]{8,}=*"
    + r"|"
    + _start(_TOKEN_CHARS)
    + r"(?:"
    r"sk-(?=[A-Za-z0-9_\-]*\d)[A-Za-z0-9_\-]{16,}"  # OpenAI sk-, sk-proj-; Anthropic sk-ant-
    r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}"  # Stripe
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"  # GitHub
    r"|glpat-[A-Za-z0-9_\-]{20,}"  # GitLab
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key ids
    r"|AIza[0-9A-Za-z_\-]{35}"  # Google
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"  # JWT
    r"|(?P<generic>[A-Za-z0-9_\-]{32,})"  # any long token: see _is_token
    rf")(?![{_TOKEN_CHARS}])"
)
_HEX = re.compile(r"[0-9a-fA-F]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MIXED = re.compile(r"(?=[^\d]*\d)(?=[^A-Za-z]*[A-Za-z])")


def _is_token(text: str) -> bool:
    """Whether a long run of token characters looks like a secret rather than an id or a
    name. Pure hex of exactly 32 or 64 characters is left alone: those are trace ids, uuid4
    hex, chunk ids and SHA-256 digests, which slmops stores and joins on (a request id that
    is redacted no longer finds its trace); so are canonical UUIDs. A token needs letters and
    digits in one piece of at least 12 characters between ``-`` / ``_``, which keeps model
    and file names (``paraphrase-multilingual-MiniLM-L12-v2``) readable."""
    if len(text) in (32, 64) and _HEX.fullmatch(text):
        return False
    if len(text) == 36 and _UUID.fullmatch(text):
        return False
    return any(len(piece) >= 12 and _MIXED.match(piece) for piece in re.split(r"[-_]", text))


def _email_rule(text: str) -> str:
    return _EMAIL.sub(placeholder("email"), text)


def _phone_rule(text: str) -> str:
    return _PHONE.sub(lambda m: placeholder("phone") if _is_phone(m) else m.group(), text)


def _api_key_replacement(match: re.Match[str]) -> str:
    generic = match.group("generic")
    if generic is not None and not _is_token(generic):
        return match.group()
    return (match.group("keep") or "") + placeholder("api_key")


def _api_key_rule(text: str) -> str:
    return _API_KEY.sub(_api_key_replacement, text)


_BUILT_IN: dict[str, Callable[[str], str]] = {
    "email": _email_rule,
    "api_key": _api_key_rule,
    "phone": _phone_rule,
}


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """``kinds`` as a tuple, or :class:`ValueError` naming the unknown ones and the known."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(
            f"unknown redaction kind(s) {', '.join(map(repr, unknown))}; known: {', '.join(KINDS)}"
        )
    return kinds


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A custom pattern compiled, or :class:`ValueError` naming it and what is wrong."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"redaction pattern {pattern!r} is not a valid regex: {exc}") from None
    except (OverflowError, RecursionError) as exc:
        # re raises these, not re.error, for a repeat count over 2**32 ("a{4294967296}") and
        # for groups nested a few hundred deep.
        problem = "groups nested too deeply" if isinstance(exc, RecursionError) else exc
        raise ValueError(f"redaction pattern {pattern!r} is not a valid regex: {problem}") from None


class Redactor:
    """Replaces emails, phone numbers, API keys (the built-in ``kinds``) and matches of
    custom regular expressions (``patterns``) with ``[REDACTED:<kind>]`` placeholders.

    Custom patterns run first (so they never see a placeholder), then ``email``,
    ``api_key`` and ``phone``. Patterns are compiled once, here; an unknown kind or a
    pattern that does not compile raises :class:`~slmops.errors.ConfigError`. How fast a
    custom pattern runs (catastrophic backtracking included) is its author's affair.
    """

    def __init__(self, kinds: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        try:
            self.kinds: tuple[str, ...] = tuple(dict.fromkeys(check_kinds(kinds)))
            self.patterns: tuple[str, ...] = tuple(patterns)
            compiled = [compile_pattern(p) for p in self.patterns]
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self._rules: list[Callable[[str], str]] = [self._custom_rule(p) for p in compiled]
        # A fixed order, whatever the order of ``kinds``: emails before tokens (a long local
        # part is no key), tokens before phone numbers.
        self._rules += [_BUILT_IN[k] for k in ("email", "api_key", "phone") if k in self.kinds]

    @classmethod
    def from_settings(cls, kinds: Iterable[str], patterns: Iterable[str]) -> Redactor:
        """The redactor workspace settings ask for: ``Redactor.from_settings(settings.redact,
        settings.redact_patterns)``; falsy when both are empty."""
        return cls(kinds, patterns)

    @staticmethod
    def _custom_rule(pattern: re.Pattern[str]) -> Callable[[str], str]:
        replacement = placeholder(CUSTOM)

        def rule(text: str) -> str:
            # An empty match (``x*``) redacts nothing rather than sprinkling placeholders.
            return pattern.sub(lambda m: replacement if m.end() > m.start() else "", text)

        return rule

    def __bool__(self) -> bool:
        return bool(self._rules)

    def __repr__(self) -> str:
        return f"Redactor(kinds={list(self.kinds)!r}, patterns={list(self.patterns)!r})"

    def redact(self, text: str) -> str:
        """``text`` with every match replaced by its placeholder."""
        for rule in self._rules:
            text = rule(text)
        return text

    def redact_value(self, value: Any, *, redact_keys: bool = False) -> Any:
        """``value`` with every string in it redacted: strings, and recursively the items of
        lists and tuples and the values of dicts (their keys too with ``redact_keys``).
        Anything else (numbers, None, other objects) is returned as it is."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self.redact_value(v, redact_keys=redact_keys) for v in value]
        if isinstance(value, tuple):
            return tuple(self.redact_value(v, redact_keys=redact_keys) for v in value)
        if isinstance(value, dict):
            return {
                (self.redact(k) if redact_keys and isinstance(k, str) else k): self.redact_value(
                    v, redact_keys=redact_keys
                )
                for k, v in value.items()
            }
        return value

    def redact_json(self, text: str) -> str:
        """Redact a string that may hold JSON so that it still parses: JSON is decoded, its
        strings (keys included) redacted one by one and encoded again (unchanged text is
        returned as it was); anything else is redacted as text."""
        if not self._rules:
            return text
        if text.lstrip()[:1] in ("{", "[", '"'):
            try:
                parsed = json.loads(text)
            except ValueError:
                pass
            else:
                redacted = self.redact_value(parsed, redact_keys=True)
                if redacted == parsed:
                    return text
                return json.dumps(redacted, ensure_ascii=False)
        return self.redact(text)
