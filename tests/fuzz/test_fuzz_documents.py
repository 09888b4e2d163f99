"""Fuzzing corpus files of every supported format (Markdown, text, HTML, PDF, JSONL): a
file gives documents with text, or UnusableFileError saying why (a Skipped entry in an
ingest); never a crash, never a hang."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from slmops.data.documents import (
    SUFFIXES,
    Document,
    UnusableFileError,
    load_file,
    load_paths,
)
from slmops.errors import SlmopsError
from tests.fuzz.support import (
    ODD_TEXT,
    deeply_nested_json,
    json_values,
    jsonl_line,
    mostly,
    parses_or_fails,
)

# The heavy readers, imported once here rather than inside the first example's deadline.
pytest.importorskip("trafilatura")
pytest.importorskip("pypdf")
pytest.importorskip("bs4")


def _load(name: str, content: bytes) -> list[Document] | UnusableFileError:
    """``load_file`` and ``load_paths`` on one file: the same verdict, and no exception."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        result = parses_or_fails(load_file, path, name, error=UnusableFileError)
        documents, skipped = parses_or_fails(load_paths, [Path(folder)], error=SlmopsError)  # type: ignore[misc]
    if isinstance(result, UnusableFileError):
        assert [s.reason for s in skipped] == [str(result)]
        return result
    assert result and not skipped and len(documents) == len(result)
    for document in result:
        assert document.blocks and all(b.text for b in document.blocks), document
        assert document.doc_id.startswith(name)
        for block in document.blocks:
            # normalize() takes control characters out: none may reach a chunk.
            assert "\x00" not in block.text
            if block.line_start is not None and block.line_end is not None:
                assert 1 <= block.line_start <= block.line_end
    return result


# --- Markdown and text ----------------------------------------------------------------------

LINE_PIECES = st.one_of(
    st.sampled_from(
        [
            "# ",
            "## Heading",
            "####### seven",
            "#",
            "```",
            "```python",
            "~~~",
            "    indented",
            "\t",
            " " * 50,
            "#" * 50,
            "- item",
            "1. item",
            "> quote",
            "text",
            "\r\n",
            "\r",
            "\u2028",
            "\x0c",
            "\x1b[31m",
            "\ufeff",
            "\u00ad",
        ]
    ),
    ODD_TEXT,
    st.text(max_size=10),
)
TEXT_DOCUMENTS = st.lists(st.lists(LINE_PIECES, max_size=5).map("".join), max_size=12).map(
    "\n".join
)


@st.composite
def encoded(draw: st.DrawFn, text: str) -> bytes:
    """``text`` as UTF-8 (with a BOM now and then), or bytes that are not UTF-8 at all."""
    data = text.encode("utf-8", errors="surrogatepass")
    roll = draw(st.integers(0, 9))
    if roll == 8:
        data = b"\xef\xbb\xbf" + data
    if roll == 9:
        at = draw(st.integers(0, len(data)))
        data = (
            data[:at] + draw(st.sampled_from([b"\xff", b"\xc3(", b"\xe2\x82", b"\x00"])) + data[at:]
        )
    return data


@given(st.sampled_from(["notes.md", "notes.txt", "notes.rst"]), TEXT_DOCUMENTS.flatmap(encoded))
@example("notes.md", b"# x" + b" " * 3000 + b"y")  # was ~10 s (cubic backtracking)
@example("notes.md", b"#" * 6 + b" " + b" #" * 3000 + b"!")
@example("notes.md", b"\xef\xbb\xbf")
@example("notes.md", b"# #")  # was a document of one empty heading
@example("notes.txt", b"\x00\x01\x02")
@example("notes.txt", b"\xff\xfe t\x00e\x00x\x00t\x00")
def test_markdown_and_text(name: str, content: bytes) -> None:
    _load(name, content)


@pytest.mark.parametrize(
    "line",
    [
        "# x" + " " * 200_000 + "y",
        "# " + " #" * 100_000 + "y",
        "## " + "a " * 200_000,
        "x" * 2_000_000,
    ],
    ids=["spaces", "hashes", "words", "long-line"],
)
def test_huge_markdown_lines_are_linear(line: str) -> None:
    """Regression: the heading pattern backtracked cubically over a line's trailing spaces
    and '#'s: 2,000 spaces took 10 s, 200,000 would take years."""
    started = time.monotonic()
    result = _load("big.md", line.encode())
    assert time.monotonic() - started < 10
    assert isinstance(result, list)


# --- HTML -----------------------------------------------------------------------------------

TAGS = st.sampled_from(
    [
        *("div", "p", "span", "main", "article", "nav", "h1", "h2", "ul", "li", "table", "tr"),
        *("td", "pre", "code", "script", "style", "a", "br", "section", "header", "footer"),
        *("body", "html", "head", "title", "template", "svg", "math", "select", "option"),
        *("form", "x-y"),
    ]
)
ATTRIBUTES = st.sampled_from(
    [
        *("", ' class="nav"', ' class="toc"', ' id="main"', ' role="main"', ' class="headerlink"'),
        *(' class="hidden"', ' href="#x"', ' class="menuselection"', " hidden", ' style="x"'),
        " a=<",
    ]
)
HTML_TEXT = st.one_of(
    st.sampled_from(
        [
            *("Hello world.", "Next: a, Previous: b", "¶", "&amp;", "&#0;", "&#x110000;"),
            *("&bogus;", "<!--", "-->", "<![CDATA[", "]]>", "<?xml?>", "<!DOCTYPE html>", "|"),
            "\u00a0",
        ]
    ),
    ODD_TEXT,
    st.text(max_size=10),
)


def _html_tree(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    @st.composite
    def element(draw: st.DrawFn) -> str:
        tag = draw(TAGS)
        inside = "".join(draw(st.lists(children, max_size=3)))
        closing = draw(st.sampled_from([f"</{tag}>", f"</{tag}>", f"</{tag}>", "", "</div>"]))
        return f"<{tag}{draw(ATTRIBUTES)}>{inside}{closing}"

    return element()


HTML = st.recursive(HTML_TEXT, _html_tree, max_leaves=25)
PAGES = st.tuples(
    st.sampled_from(["", "<!DOCTYPE html>", "<html><body>", '<?xml version="1.0"?>']), HTML
).map("".join)


def _nested(depth: int, tag: str = "div") -> bytes:
    return (f"<{tag}>" * depth + "deep text" + f"</{tag}>" * depth).encode()


@pytest.mark.filterwarnings("ignore::bs4.XMLParsedAsHTMLWarning")  # pages with <?xml?>
@given(st.sampled_from(["page.html", "page.htm"]), PAGES.flatmap(encoded))
@example("page.html", _nested(5000))
@example("page.html", _nested(3000, "p") + b"<p>after</p>")
@example("page.html", b"<html><body>" + b"<!--" * 1000)
@example("page.html", b"<script>" * 500 + b"text")
@example("page.html", b"<h1>" + b"x " * 100_000)
def test_html(name: str, content: bytes) -> None:
    _load(name, content)


@pytest.mark.parametrize(
    "page",
    ["<h1>" + " " * 100_000 + "x</h1><p>para</p>", "<h2>" + "¶ " * 50_000 + "x</h2><p>para</p>"],
    ids=["spaces", "pilcrows"],
)
def test_long_headings_are_linear(page: str) -> None:
    """Regression: stripping a heading's permalink sign backtracked quadratically over a
    run of spaces: an <h1> of 100,000 spaces took 30 s."""
    started = time.monotonic()
    result = _load("page.html", page.encode())
    assert time.monotonic() - started < 10
    assert isinstance(result, list)


@pytest.mark.parametrize("depth", [100, 1000, 20_000])
def test_deeply_nested_html(depth: int) -> None:
    result = _load("deep.html", _nested(depth))
    assert isinstance(result, list) and "deep text" in result[0].text


# --- PDF ------------------------------------------------------------------------------------


def tiny_pdf(pages: list[str], *, kids: str | None = None, count: str | None = None) -> bytes:
    """A minimal PDF with one line of text per page; ``kids``/``count`` override the page
    tree's entries (to make it lie)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    refs = []
    for text in pages:
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        page_id, content_id = len(objects) + 1, len(objects) + 2
        refs.append(f"{page_id} 0 R")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents "
            f"{content_id} 0 R /Resources << /Font << /F1 {len(pages) * 2 + 3} 0 R >> >> >>"
        )
        objects.append(f"<< /Length {len(content)} >>\nstream\n{content}\nendstream")
    objects[1] = (
        f"<< /Type /Pages /Kids [{kids if kids is not None else ' '.join(refs)}] "
        f"/Count {count if count is not None else len(pages)} >>"
    )
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1", errors="replace")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


PDF_TEXT = st.text(
    st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="()\\"), max_size=20
)
HOSTILE_NUMBERS = st.sampled_from([b"0", b"-1", b"99999999999999999999", b"1e308", b"2 0 R", b"/X"])


@st.composite
def pdfs(draw: st.DrawFn) -> bytes:
    """A small valid PDF, then damaged: truncated, bytes overwritten, numbers swapped for
    hostile ones, or a page tree that lies (cycles, counts)."""
    pages = draw(st.lists(PDF_TEXT, min_size=1, max_size=3))
    tree = draw(
        st.sampled_from(
            [
                {},
                {"kids": "2 0 R"},  # the page tree is its own child
                {"kids": "1 0 R"},
                {"kids": "3 0 R 3 0 R 3 0 R"},
                {"kids": "99 0 R"},
                {"count": "1000000000"},
                {"count": "-5"},
            ]
        )
    )
    data = bytearray(tiny_pdf(pages, **tree))
    for _ in range(draw(st.integers(0, 2))):
        how = draw(st.sampled_from(["truncate", "overwrite", "number", "none"]))
        if how == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif how == "overwrite" and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at : at + 4] = draw(st.binary(min_size=1, max_size=4))
        elif how == "number":
            digits = [i for i, byte in enumerate(data) if chr(byte).isdigit()]
            if digits:
                at = draw(st.sampled_from(digits))
                data[at : at + 1] = draw(HOSTILE_NUMBERS)
    return bytes(data)


@given(pdfs())
@example(tiny_pdf(["a"], kids="2 0 R"))  # a page tree that contains itself
@example(tiny_pdf(["a"])[:200])  # truncated mid-object
@example(re.sub(rb"xref\n0 \d+", b"xref\n0 0", tiny_pdf(["a"])))  # was LimitReachedError
@example(tiny_pdf(["", ""]).replace(b"72 720 Td", b"72 72 0 R0 Td"))  # was AssertionError
@example(b"%PDF-1.4 garbage")
@example(b"%PDF-")
def test_pdf(content: bytes) -> None:
    _load("paper.pdf", content)


@pytest.mark.parametrize(
    "content",
    [
        re.sub(rb"xref\n0 \d+", b"xref\n0 0", tiny_pdf(["a"])),
        tiny_pdf(["", ""]).replace(b"72 720 Td", b"72 72 0 R0 Td"),
    ],
    ids=["xref-size", "operand"],
)
def test_pdfs_that_break_pypdf_are_unusable(content: bytes) -> None:
    """Regression: pypdf raised LimitReachedError (no PdfReadError), AssertionError and
    TypeError on damaged files, and the ingest stopped with a traceback."""
    result = _load("paper.pdf", content)
    assert isinstance(result, UnusableFileError) and "unreadable PDF" in str(result)


def test_empty_markdown_headings_hold_no_block() -> None:
    """Regression: '# #' became a heading block with no text (a document of nothing)."""
    assert isinstance(_load("notes.md", b"# #\n## ##"), UnusableFileError)
    result = _load("notes.md", b"# ##\ntext\n# Title #")
    assert isinstance(result, list)
    assert [(b.text, b.heading) for b in result[0].blocks] == [("text", False), ("Title", True)]


# --- JSONL ----------------------------------------------------------------------------------

JSONL_RECORDS = mostly(
    st.fixed_dictionaries(
        {"text": mostly(st.text(min_size=1, max_size=30), st.one_of(ODD_TEXT, json_values()))},
        optional={
            "id": json_values(),
            "title": json_values(),
            "metadata": json_values(),
            "year": json_values(),
        },
    ),
    json_values(),
)
JSONL_RAW = st.sampled_from(
    [
        "",
        "{",
        '{"text": "a"} x',
        '{"text": "\\ud800 lone surrogate"}',
        '{"text": "a", "x": NaN}',
        '{"text": "a", "x": ' + "1" * 5000 + "}",  # over int's digit limit: ValueError
        '{"text": "a", "x": ' + deeply_nested_json(100_000) + "}",  # was RecursionError
        '{"text": "a", "x": ' + deeply_nested_json(5000, "object") + "}",
    ]
)


@st.composite
def jsonl_documents(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(mostly(JSONL_RECORDS.map(jsonl_line), JSONL_RAW), min_size=1, max_size=4))
    return draw(encoded("\n".join(lines)))


@given(jsonl_documents())
@example(('{"text": "a", "x": ' + deeply_nested_json(100_000) + "}").encode())
@example(('{"text": "a", "id": ' + deeply_nested_json(5000, "object") + "}").encode())
@example(b'{"text": "\\ud800", "id": "\\udc00"}')
@example('{"text": "a\u2028b"}'.encode())  # was cut in two at the U+2028
def test_jsonl(content: bytes) -> None:
    result = _load("docs.jsonl", content)
    if isinstance(result, list):
        for document in result:
            document.doc_id.encode("utf-8")  # stored as text by the corpus tables
            jsonl_line(document.metadata)


def test_jsonl_records_may_hold_line_separators() -> None:
    """Regression: str.splitlines() also splits at U+2028, U+0085 and U+001E, which a JSON
    string may hold unescaped: such a record was cut in two and the file skipped."""
    text = "a\u2028b\u0085c\u001ed\u000be"
    content = (jsonl_line({"text": text, "id": "x\u2029"}) + "\r\n" + '{"text": "2"}').encode()
    result = _load("docs.jsonl", content)
    assert isinstance(result, list) and [d.doc_id for d in result] == [
        "docs.jsonl#x\u2029",
        "docs.jsonl#2",
    ]


def test_deeply_nested_jsonl_line_is_unusable() -> None:
    """Regression: json.loads raised RecursionError (no ValueError) out of the ingest."""
    content = ('{"text": "a", "x": ' + deeply_nested_json(100_000) + "}").encode()
    result = _load("docs.jsonl", content)
    assert isinstance(result, UnusableFileError) and "line 1" in str(result)


# --- every format -----------------------------------------------------------------------------


def test_empty_and_binary_files() -> None:
    for suffix in sorted(SUFFIXES):
        for content in (b"", b" ", b"\n\n\n", b"\xef\xbb\xbf", b"\xff\xfe\xfd", b"\x00" * 10):
            result = _load(f"file{suffix}", content)
            assert isinstance(result, UnusableFileError), (suffix, content, result)


@given(st.sampled_from(sorted(SUFFIXES)), st.binary(max_size=300))
def test_any_bytes(suffix: str, content: bytes) -> None:
    _load(f"file{suffix}", content)


def test_unusable_files_are_slmops_errors() -> None:
    assert issubclass(UnusableFileError, SlmopsError)
