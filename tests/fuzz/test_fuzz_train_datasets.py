"""Fuzzing training JSONL (chat ``messages`` or ``prompt``/``completion`` lines): examples or
TrainDataError, and an add that fails leaves no version and no file."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from slmops.store import Workspace
from slmops.train.datasets import TrainDataError, TrainDatasets, TrainExample, read_examples
from tests.fuzz.support import (
    NAMES,
    ODD_TEXT,
    deeply_nested_json,
    files_under,
    json_values,
    jsonl_line,
    mostly,
    parses_or_fails,
)

TEXT = st.one_of(st.text(max_size=20), ODD_TEXT)
WORDS = st.text(min_size=1, max_size=12).filter(str.strip)
ANY = json_values()
ROLES = mostly(st.sampled_from(["system", "user", "assistant"]), st.one_of(TEXT, ANY))
MESSAGE = mostly(
    st.fixed_dictionaries(
        {"role": ROLES, "content": mostly(WORDS, st.one_of(TEXT, ANY))},
        optional={"name": ANY},
    ),
    ANY,
)


@st.composite
def chats(draw: st.DrawFn) -> list[Any]:
    """Usually a valid conversation (system?, user, assistant...), sometimes shuffled."""
    if draw(st.integers(0, 4)) == 4:
        return draw(st.lists(MESSAGE, max_size=4))
    turns: list[Any] = []
    if draw(st.booleans()):
        turns.append({"role": "system", "content": draw(WORDS)})
    for _ in range(draw(st.integers(1, 2))):
        turns += [{"role": "user", "content": draw(WORDS)}]
        turns += [{"role": "assistant", "content": draw(WORDS)}]
    if draw(st.integers(0, 4)) == 4:
        turns[draw(st.integers(0, len(turns) - 1))] = draw(MESSAGE)
    return turns


EXAMPLE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "id": mostly(WORDS, st.one_of(TEXT, ANY)),
    "group": mostly(WORDS, ANY),
    "split": mostly(st.sampled_from(["train", "heldout"]), st.one_of(TEXT, ANY)),
    "metadata": mostly(st.dictionaries(TEXT, ANY, max_size=3), ANY),
    "unknown": ANY,
}


@st.composite
def example_objects(draw: st.DrawFn, chat: bool) -> Any:
    if draw(st.integers(0, 9)) == 9:
        return draw(ANY)
    record: dict[str, Any] = {}
    if chat:
        record["messages"] = draw(mostly(chats(), ANY))
    else:
        record["prompt"] = draw(mostly(WORDS, st.one_of(TEXT, ANY)))
        record["completion"] = draw(mostly(WORDS, st.one_of(TEXT, ANY)))
    if draw(st.integers(0, 9)) == 9:  # both shapes, or neither
        record.pop(draw(st.sampled_from(sorted(record))))
        if draw(st.booleans()):
            record.update(prompt="p", completion="c", messages=[])
    for key in draw(st.lists(st.sampled_from(sorted(EXAMPLE_FIELDS)), max_size=2, unique=True)):
        if key != "unknown" or draw(st.integers(0, 4)) == 4:
            record[key] = draw(EXAMPLE_FIELDS[key])
    return record


RAW_LINES = st.sampled_from(
    [
        "",
        "{",
        "[]",
        '{"prompt": "p", "completion": "c", "metadata": {"x": NaN}}',
        '{"prompt": "p", "completion": "\\udc00"}',
        '{"messages": ' + deeply_nested_json(3000) + "}",
        '{"prompt": "p", "completion": "c", "metadata": {"n": ' + "9" * 5000 + "}}",
    ]
)


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    chat = draw(st.booleans())
    lines = draw(
        st.lists(
            mostly(
                st.one_of(example_objects(chat), example_objects(not chat)).map(jsonl_line)
                if draw(st.integers(0, 9)) == 9
                else example_objects(chat).map(jsonl_line),
                RAW_LINES,
            ),
            min_size=1,
            max_size=3,
        )
    )
    data = "\n".join(lines).encode("utf-8")
    if draw(st.integers(0, 19)) == 19:
        data = data[: draw(st.integers(0, len(data)))] + b"\xff"
    return data


@given(jsonl_files(), NAMES, st.sampled_from([0.8, 1.0, 0.5, 0.0, float("nan")]))
@example(b'{"prompt": "p", "completion": "c", "metadata": {"x": NaN}}', "fuzz", 0.8)
@example(b'{"prompt": "p", "completion": "c"}\n{"messages": []}', "fuzz", 0.8)
@example(b'{"messages": [{"role": "assistant", "content": "a"}]}', "fuzz", 0.8)
def test_example_files(workspace: Workspace, content: bytes, name: str, split: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.jsonl"
        path.write_bytes(content)
        result = parses_or_fails(read_examples, path, error=TrainDataError)
    if isinstance(result, TrainDataError):
        assert str(path) in str(result), str(result)
        return
    datasets = TrainDatasets(workspace)
    before = (datasets.names(), files_under(workspace.home))
    added = parses_or_fails(datasets.add, name, result, split=split, error=TrainDataError)
    if isinstance(added, TrainDataError):
        assert (datasets.names(), files_under(workspace.home)) == before, str(added)
        return
    version, _ = added
    _, stored = datasets.examples(version.ref)
    assert [e.model_dump(exclude={"split"}) for e in stored] == [
        e.model_dump(exclude={"split"}) for e in result
    ]
    assert version.train + version.heldout == len(result)


def test_examples_with_line_separators_read_back(workspace: Workspace) -> None:
    """Regression: an example holding U+2028 was stored, then cut in two when read back."""
    examples = [TrainExample(prompt="a\u2028b", completion="c\u0085d")]
    version, _ = TrainDatasets(workspace).add("seps", examples)
    stored = TrainDatasets(workspace).examples(version.ref)[1]
    assert [(e.prompt, e.completion) for e in stored] == [("a\u2028b", "c\u0085d")]


def test_non_finite_metadata_is_refused() -> None:
    """Regression: NaN in an example's metadata was stored as null."""
    error = parses_or_fails(
        TrainExample.model_validate_json,
        '{"prompt": "p", "completion": "c", "metadata": {"x": [NaN]}}',
        error=Exception,  # type: ignore[arg-type]
    )
    assert "metadata.x.0 is not a finite number" in str(error)
