"""Fuzzing workspace settings (``config.toml`` plus ``SLMOPS_*`` overrides): a value or a
ConfigError naming the file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from slmops.errors import ConfigError
from slmops.store.redaction import Redactor
from slmops.store.settings import CONFIG_FILE_NAME, Settings, load_settings
from tests.fuzz.support import ODD_TEXT, json_values, parses_or_fails, toml_document

FIELDS = list(Settings.model_fields)
KEYS = st.one_of(
    st.sampled_from([*FIELDS, "redact_pattern", "Database_URL", ""]), st.text(max_size=6)
)
VALUES = st.one_of(
    json_values(),
    ODD_TEXT,
    st.sampled_from(
        [
            "sql",
            "redis://localhost:6379/0",
            "email",
            ["email", "phone"],
            ["email", "nope"],
            ["(", "[a-z]+"],
            ["(" * 1000 + ")" * 1000],  # was RecursionError from re.compile
            ["a{4294967296}"],  # was OverflowError from re.compile
            ["(?P<x>a)(?P<x>b)"],
        ]
    ),
)
ENV_VALUES = st.one_of(
    st.text(max_size=30), ODD_TEXT, st.sampled_from(["email,phone", ",,", "sql"])
)


def _load(text: str | bytes, env: dict[str, str]) -> Settings | ConfigError:
    with tempfile.TemporaryDirectory() as home:
        path = Path(home) / CONFIG_FILE_NAME
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SLMOPS_")}
        with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
            result = parses_or_fails(load_settings, Path(home), error=ConfigError)
    if isinstance(result, Settings):
        # Whatever loads must also build the redactor every trace goes through.
        parses_or_fails(Redactor, result.redact, result.redact_patterns, error=ConfigError)
    return result


@given(st.dictionaries(KEYS, VALUES, max_size=5))
@example({"redact_patterns": ["(" * 1000 + ")" * 1000]})
@example({"redact_patterns": ["a{4294967296}"]})
@example({"redact": "email"})
@example({"cache_url": 1})
def test_config_files(data: dict[str, Any]) -> None:
    result = _load(toml_document(data), {})
    if isinstance(result, ConfigError):
        assert CONFIG_FILE_NAME in str(result), str(result)


@given(st.dictionaries(st.sampled_from([f"SLMOPS_{f.upper()}" for f in FIELDS]), ENV_VALUES))
@example({"SLMOPS_REDACT": "email,bogus"})
@example({"SLMOPS_REDACT_PATTERNS": "a,b"})
@example({"SLMOPS_CACHE_URL": "\x00"})
def test_environment_overrides(env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if "\x00" not in v}  # the OS refuses NUL in variables
    _load("", env)


@given(st.one_of(st.binary(max_size=120), st.text(max_size=120)))
@example(b"\xff\xfe")
@example("a = " + "[" * 5000 + "]" * 5000)  # was RecursionError in tomllib
@example("[a]\n[a]\n")
def test_any_file_content(content: str | bytes) -> None:
    _load(content, {})


@pytest.mark.parametrize("pattern", ["(" * 1000 + ")" * 1000, "a{4294967296}", "x{2,1}"])
def test_bad_redaction_patterns_are_config_errors(pattern: str) -> None:
    """Regression: patterns that make re.compile raise RecursionError or OverflowError (not
    re.error) escaped as tracebacks."""
    result = _load(toml_document({"redact_patterns": [pattern]}), {})
    assert isinstance(result, ConfigError) and "redact_patterns" in str(result), str(result)
    with pytest.raises(ConfigError, match="not a valid regex"):
        Redactor(patterns=[pattern])
