"""Fuzzing ``slmops.toml`` stack manifests: every input parses or raises ManifestError."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from slmops.apps.manifest import (
    STEP_KINDS,
    LoadedManifest,
    ManifestError,
    load_manifest,
    parse_manifest,
)
from tests.fuzz.support import (
    SCALARS,
    json_values,
    parses_or_fails,
    toml_document,
    toml_key,
    toml_value,
)

PATH = Path("fuzz/slmops.toml")
FILL = {
    "name": "demo",
    "corpus": "docs",
    "model": "local:smollm2-135m",
    "answer": "extractive",
    "target": "demo-target",
}


def _templates() -> list[dict[str, Any]]:
    root = resources.files("slmops.apps") / "stack_templates"
    manifests = []
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        manifest = folder / "slmops.toml"
        if manifest.is_file():
            text = Template(manifest.read_text(encoding="utf-8")).safe_substitute(FILL)
            manifests.append(tomllib.loads(text))
    return manifests


TEMPLATES = _templates()

# Words a manifest is made of, so generated documents get past the first checks.
KEYS = st.sampled_from(
    [
        "stack",
        "name",
        "description",
        "template",
        "output",
        "depends_on",
        "input",
        "models",
        "corpora",
        "prompts",
        "settings",
        "steps",
        "kind",
        "corpus",
        "prompt",
        "model",
        "k",
        "mode",
        "where",
        "labels",
        "fields",
        "for_each",
        "call",
        "routes",
        "by",
        "retrieval",
        "selection",
        "answer",
        "question",
        "when",
        "retry",
        "timeout_s",
        "n",
        "type",
        "default",
        "required",
        "examples",
        "max_tokens",
        "temperature",
        "stop",
        "unknown_key",
    ]
)
WORDS = st.one_of(
    st.sampled_from(
        [
            *STEP_KINDS,
            "demo",
            "docs",
            "chat",
            "answer",
            "retrieve",
            "input",
            "input.question",
            "input.nope",
            "settings.answer",
            "retrieve.hits",
            "string",
            "integer?",
            "list[string]",
            "messages",
            "extractive",
            "docs@latest",
            "docs@",
            "@1",
            "pkg.mod:func",
            "local:smollm2-135m",
        ]
    ),
    SCALARS,
)
VALUES = json_values(KEYS)


def _check(text: str) -> LoadedManifest | ManifestError:
    result = parses_or_fails(parse_manifest, text, PATH, error=ManifestError)
    if isinstance(result, ManifestError):
        assert str(result).startswith(str(PATH)) or "fuzz" in str(result), str(result)
        return result
    # What the rest of slmops asks of a valid manifest must work too.
    assert result.manifest.steps
    result.stack_references()
    assert result.step(result.output_step) is not None
    return result


@given(st.text(max_size=300))
@example("")
@example("[stack]\nname = 'x'\n")
@example("steps = [[1]]\n[stack]\nname = 'x'\n")  # was AttributeError in the error message
@example("a = " + "[" * 5000 + "]" * 5000)  # was RecursionError in tomllib
@example("a = " + "{b = " * 3000 + "1" + "}" * 3000)
def test_any_text(text: str) -> None:
    _check(text)


@given(st.dictionaries(KEYS, st.one_of(VALUES, WORDS), max_size=6))
def test_documents_of_manifest_words(data: dict[str, Any]) -> None:
    _check(toml_document(data))


@st.composite
def mutated_template(draw: st.DrawFn) -> dict[str, Any]:
    """A shipped template with a few keys replaced, removed or added."""
    data: Any = draw(st.sampled_from(TEMPLATES))
    data = tomllib.loads(toml_document(data))  # a deep copy
    for _ in range(draw(st.integers(1, 3))):
        # Walk down to a random table or array.
        node: Any = data
        while True:
            children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            containers = [(k, v) for k, v in children if isinstance(v, dict | list) and v]
            if not containers or draw(st.integers(0, 3)) == 3:  # mostly deep: steps' keys
                break
            node = draw(st.sampled_from(containers))[1]
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "add" or not keys:
            if isinstance(node, dict):
                node[draw(KEYS)] = draw(st.one_of(WORDS, VALUES))
            else:
                node.append(draw(st.one_of(WORDS, VALUES)))
        elif action == "remove":
            del node[draw(st.sampled_from(keys))]
        else:
            node[draw(st.sampled_from(keys))] = draw(st.one_of(WORDS, VALUES))
    return data


@given(mutated_template())
def test_mutated_templates(data: dict[str, Any]) -> None:
    _check(toml_document(data))


def test_shipped_templates_parse() -> None:
    """The fuzzers' seeds are valid manifests: mutations start from something real."""
    for data in TEMPLATES:
        assert isinstance(_check(toml_document(data)), LoadedManifest)


@pytest.mark.parametrize("data", TEMPLATES[:2], ids=["chat", "classify"])
def test_step_list_items_of_any_type(data: dict[str, Any]) -> None:
    """A step that is not a table (a number, a list) is named in the message."""
    values: list[Any] = [1, [1], "retrieve", [[]], {"kind": [1]}]
    for value in values:
        changed = {**data, "steps": [value, *data["steps"]]}
        result = _check(toml_document(changed))
        assert isinstance(result, ManifestError)
        assert "steps[1]" in str(result), str(result)


@pytest.mark.parametrize("depth", [10, 500, 5000])
def test_deeply_nested_values(depth: int) -> None:
    nested = "[" * depth + "]" * depth
    result = _check(f"{toml_key('settings')} = {{ a = {nested} }}\n")
    if depth >= 5000:
        assert isinstance(result, ManifestError) and "nested too deeply" in str(result)


@given(st.binary(max_size=200))
@example(b"\xff\xfe[stack]")
@example("[stack]\nname = 'd\u00e9mo'\n".encode("latin-1"))
def test_files_of_any_bytes(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("manifest") / "slmops.toml"
    path.write_bytes(raw)
    result = parses_or_fails(load_manifest, path, error=ManifestError)
    if isinstance(result, ManifestError):
        assert str(path) in str(result)


def test_toml_writer_round_trips() -> None:
    data = {"a": [1, 2.5, "x"], "b": {"c": True, "d": "é\n"}}
    assert tomllib.loads(toml_document(data)) == data
    assert toml_value(float("nan")) == "nan"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("question = 'nope'", "'stack.input.question.type': unknown type 'nope'"),
        ("question = {type = 'string', bogus = 1}", "unknown key 'stack.input.question.bogus'"),
        ("question = 3", "'stack.input.question': Input should be a valid dictionary"),
    ],
)
def test_input_field_errors_name_the_field(table: str, message: str) -> None:
    """Regression: a bad input field lost its name ('stack.input.type: unknown type')."""
    text = f"[stack]\nname = 'demo'\n[stack.input]\n{table}\n"
    text += "[[steps]]\nname = 'a'\nkind = 'function'\ncall = 'm:f'\n"
    result = _check(text)
    assert isinstance(result, ManifestError) and message in str(result), str(result)
