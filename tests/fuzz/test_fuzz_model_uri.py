"""Fuzzing model URIs: a ModelURI that prints back to itself, or UnknownModelError."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from slmops.errors import UnknownModelError
from slmops.models.uri import ADAPTER_MARK, SCHEMES, ModelURI, parse_model_uri
from tests.fuzz.support import ODD_TEXT, parses_or_fails

PIECES = st.one_of(
    st.sampled_from(
        [
            *[f"{scheme}:" for scheme in SCHEMES],
            ADAPTER_MARK,
            "http://",
            "https://",
            "ftp://",
            "[",
            "]",
            "[::1]",
            ":",
            ":8000",
            ":99999",
            "#",
            "@",
            "@3",
            "@latest",
            "/",
            "/v1",
            "localhost",
            "smollm2-135m",
            "qwen",
            ".gguf",
            " ",
            "\n",
            "%",
            "%zz",
        ]
    ),
    ODD_TEXT,
    st.text(max_size=6),
)
URIS = st.lists(PIECES, max_size=8).map("".join)


def _check(uri: str) -> None:
    result = parses_or_fails(parse_model_uri, uri, error=UnknownModelError)
    if isinstance(result, ModelURI):
        assert result.scheme in SCHEMES or result.location
        # What a manifest or a registry stores is str(parsed): it must mean the same model.
        assert parse_model_uri(str(result)) == result, str(result)
        assert parse_model_uri(result.base).adapter is None


@given(URIS)
@example("openai:http://[::1#m")  # was ValueError (Invalid IPv6 URL) from urlsplit
@example("openai:http://[v1.x]:80/v1#m")
@example("openai:http://h:99999/v1#m")
@example("registry:name\n")  # was accepted: '$' matches before a final newline
@example("registry:name@prod\n")
@example("local:a+adapter:b+adapter:c")
@example("openai:http://h/v1/#")
def test_built_from_uri_pieces(uri: str) -> None:
    _check(uri)


@given(st.text(max_size=60))
def test_any_text(uri: str) -> None:
    _check(uri)


def test_openai_uri_with_a_broken_host_is_refused() -> None:
    for uri in ("openai:http://[::1#m", "openai:https://[/v1", "openai:http://h:99999/v1#m"):
        error = parses_or_fails(parse_model_uri, uri, error=UnknownModelError)
        assert isinstance(error, UnknownModelError) and "openai:http(s)://host" in str(error)


def test_registry_reference_with_a_trailing_newline_is_refused() -> None:
    for uri in ("registry:name\n", "registry:name@prod\n"):
        error = parses_or_fails(parse_model_uri, uri, error=UnknownModelError)
        assert isinstance(error, UnknownModelError), repr(error)
