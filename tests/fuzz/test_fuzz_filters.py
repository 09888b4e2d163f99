"""Fuzzing ``--where`` metadata filters (and a manifest's ``where`` table): a checked filter
whose SQL selects exactly the matching rows, or DataError."""

from __future__ import annotations

import sqlite3
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from slmops.data.corpus import FILTER_COLUMNS, DataError, filter_sql, parse_where, split_filter
from tests.fuzz.support import ODD_TEXT, SCALARS, json_values, parses_or_fails

TEXT_COLUMNS = ("doc_id", "source", "file_type", "section")
NUMBER_COLUMNS = ("page_start", "line_start")
COLUMN_WORDS = st.sampled_from([*FILTER_COLUMNS, "metadata.year", "metadata.", "metadata", "text"])
VALUE_WORDS = st.one_of(
    st.sampled_from(["3", "0042", "²", "١٢", "9" * 5000, "a=b", "'", "''", "x' OR '1'='1", "\\"]),
    ODD_TEXT,
    st.text(max_size=10),
)
ITEMS = st.one_of(
    st.tuples(COLUMN_WORDS, st.sampled_from(["=", " = ", "", "=="]), VALUE_WORDS).map("".join),
    st.text(max_size=20),
)


@given(st.lists(ITEMS, max_size=4))
@example(["page_start=²"])  # was ValueError: '²'.isdigit() but int('²') fails
@example(["page_start=" + "9" * 5000])  # was ValueError: over int's 4300-digit limit
@example(["doc_id"])
@example(["=x"])
def test_where_options(items: list[str]) -> None:
    result = parses_or_fails(parse_where, items, error=DataError)
    if isinstance(result, dict):
        assert parses_or_fails(filter_sql, result, error=DataError) is None or isinstance(
            filter_sql(result), str
        )


@given(st.dictionaries(st.one_of(COLUMN_WORDS, st.text(max_size=8)), json_values(), max_size=4))
@example({"page_start": float("nan")})  # was 'page_start = nan', SQL naming a column nan
@example({"page_start": float("inf")})
@example({"doc_id": [1, 2]})  # was quoted as "'[1, 2]'", matching nothing, silently
@example({"doc_id": {"a": 1}})
def test_manifest_where_tables(where: dict[str, Any]) -> None:
    """A retrieve step's ``where`` comes from TOML: any value type, NaN and infinities."""
    parses_or_fails(filter_sql, where, error=DataError)


ROW_TEXT = st.one_of(st.sampled_from(["a", "it's", "''", "x' OR '1'='1", "\\", "%", "_"]), ODD_TEXT)
ROWS = st.lists(
    st.fixed_dictionaries(
        {
            **{c: ROW_TEXT for c in TEXT_COLUMNS},
            **{c: st.integers(-3, 3) for c in NUMBER_COLUMNS},
        }
    ),
    min_size=1,
    max_size=6,
)


@given(ROWS, st.data())
def test_filter_sql_selects_exactly_the_matching_rows(
    rows: list[dict[str, Any]], data: st.DataObject
) -> None:
    """Values are quoted, never spliced: a quote in a value cannot widen the filter."""
    where: dict[str, Any] = {}
    for column in data.draw(st.lists(st.sampled_from(FILTER_COLUMNS), max_size=3, unique=True)):
        pick = st.sampled_from([row[column] for row in rows])
        other = ROW_TEXT if column in TEXT_COLUMNS else st.integers(-3, 3)
        where[column] = data.draw(st.one_of(pick, other))
    where = {k: v for k, v in where.items() if "\x00" not in str(v)}  # sqlite stops at NUL
    rows = [r for r in rows if not any("\x00" in str(v) for v in r.values())]
    sql = filter_sql(where)
    connection = sqlite3.connect(":memory:")
    columns = ", ".join(
        f"{c} {'INTEGER' if c in NUMBER_COLUMNS else 'TEXT'}" for c in FILTER_COLUMNS
    )
    connection.execute(f"CREATE TABLE chunks (n INTEGER, {columns})")
    for number, row in enumerate(rows):
        connection.execute(
            f"INSERT INTO chunks VALUES (?, {', '.join('?' * len(FILTER_COLUMNS))})",
            (number, *(row[c] for c in FILTER_COLUMNS)),
        )
    query = "SELECT n FROM chunks" + (f" WHERE {sql}" if sql else "") + " ORDER BY n"
    selected = [n for (n,) in connection.execute(query)]
    expected = [n for n, row in enumerate(rows) if all(row[k] == v for k, v in where.items())]
    assert selected == expected, (sql, rows)


@given(st.dictionaries(st.sampled_from(["metadata.a", "metadata.b.c"]), SCALARS, max_size=2))
def test_metadata_keys_pass_through(where: dict[str, Any]) -> None:
    columns, metadata = split_filter(where)
    assert columns == {} and len(metadata) == len(where)


def test_filter_values_must_be_strings_or_finite_numbers() -> None:
    """Regression: NaN and infinities became SQL naming a column 'nan' or 'inf'; lists and
    tables were quoted as their repr and silently matched nothing."""
    for value in (float("nan"), float("inf"), [1, 2], {"a": 1}, None, True):
        error = parses_or_fails(filter_sql, {"page_start": value}, error=DataError)
        assert isinstance(error, DataError) and "filter value" in str(error), error
    assert filter_sql({"page_start": 2.5, "doc_id": "it's"}) == (
        "page_start = 2.5 AND doc_id = 'it''s'"
    )


def test_where_numbers_are_ascii_digits() -> None:
    """Regression: 'page_start=²' and a 5000-digit number raised ValueError in the CLI."""
    assert parse_where(["page_start=²", "metadata.year = 2024"]) == {
        "page_start": "²",
        "metadata.year": 2024,
    }
    error = parses_or_fails(parse_where, ["page_start=" + "9" * 5000], error=DataError)
    assert isinstance(error, DataError) and "too long" in str(error)
    error = parses_or_fails(parse_where, ["doc_id"], error=DataError)
    assert isinstance(error, DataError) and "COLUMN=VALUE" in str(error)
