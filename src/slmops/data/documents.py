"""Read files into documents: Markdown, plain text, HTML, PDF and JSONL.

Each document is a list of blocks (a heading, a paragraph, a list item, a PDF page's
paragraph) that know where they came from (a line span or a page), so chunks can cite their
source. An HTML page gives its main content, not its navigation. Files that cannot be used
are reported by path and reason, never fatal.
"""

from __future__ import annotations

import bisect
import html
import json
import re
import unicodedata
from collections.abc import Iterator
from configparser import ConfigParser
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from slmops.errors import SlmopsError

SUFFIXES = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".jsonl": "jsonl",
}
MAX_FILE_BYTES = 50 * 1024 * 1024
# A heading's marks and text; the closing '#'s and spaces are stripped in code: as a pattern
# (r"^(#{1,6})\s+(.*?)\s*#*\s*$") they backtracked cubically over a long run of trailing
# spaces, 10 s for a line of 2,000.
_HEADING = re.compile(r"(#{1,6})\s+(.*)")


@dataclass(frozen=True)
class Block:
    text: str
    heading: bool = False
    level: int = 0  # heading level (1-6), 0 for body text
    line_start: int | None = None  # 1-based, inclusive
    line_end: int | None = None
    page: int | None = None  # 1-based, for PDFs


@dataclass
class Document:
    doc_id: str  # stable: the path relative to the ingest root (plus '#n' for JSONL lines)
    source: str  # the file it came from
    file_type: str
    blocks: list[Block]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(block.text for block in self.blocks)


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


class UnusableFileError(SlmopsError):
    """Raised by loaders; turned into a :class:`Skipped` entry by :func:`load_paths`."""


def normalize(text: str) -> str:
    """Unicode NFC, unified newlines, no trailing spaces, no control characters."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    return "\n".join(line.rstrip() for line in text.split("\n"))


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise UnusableFileError("binary content (NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnusableFileError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _line_blocks(text: str, *, markdown: bool) -> list[Block]:
    """Paragraphs separated by blank lines; Markdown headings become their own blocks."""
    blocks: list[Block] = []
    lines = normalize(text).split("\n")
    paragraph: list[str] = []
    start = 0
    in_fence = False

    def flush(end: int) -> None:
        if paragraph and any(p.strip() for p in paragraph):
            blocks.append(Block("\n".join(paragraph).strip(), line_start=start, line_end=end))
        paragraph.clear()

    for number, line in enumerate(lines, start=1):
        if markdown and line.lstrip().startswith("```"):
            in_fence = not in_fence
        heading = _HEADING.match(line) if markdown and not in_fence else None
        if heading:
            flush(number - 1)
            title = heading.group(2).rstrip().rstrip("#").rstrip()
            if title:  # "# #" is an empty heading: it ends a paragraph but holds no text
                blocks.append(
                    Block(
                        title,
                        heading=True,
                        level=len(heading.group(1)),
                        line_start=number,
                        line_end=number,
                    )
                )
        elif not line.strip() and not in_fence:
            flush(number - 1)
        else:
            if not paragraph:
                start = number
            paragraph.append(line)
    flush(len(lines))
    return blocks


# HTML: the page's main content, found by trafilatura.
#
# Documentation sites wrap every page in navigation ("Next: Thread Safety, Previous: ...",
# sidebars, tables of contents, cookie banners, footers) that would otherwise end up in
# chunks and answers. trafilatura tells the main content from that boilerplate; the code
# below turns its XML (<head rend="h2">, <p>, <list>/<item>, <code>, <quote>,
# <table>/<row>/<cell>) into blocks and adds what it does not give: source lines, and help
# with the layouts it misreads.

# Removed before extraction. trafilatura itself drops <nav>,
# role="navigation", cookie and consent banners and hidden elements. It keeps:
# - GNU Texinfo's "Next: ..., Previous: ..., Up: ..." panels (div.header up to Texinfo 6,
#   div.nav-panel from 7);
# - the title of an in-page table of contents, dropping only its links (DocBook div.toc,
#   npm's section#table_of_contents): a toc with a title of its own goes whole;
# - permalinks: Sphinx and MkDocs "¶" headerlinks and Texinfo copiable-links wherever they
#   are (signatures too), and in headings any one-sign link to the page (Node.js "#",
#   rustdoc "§").
# Links without text go too: trafilatura takes the anchors that DocBook, Doxygen or Javadoc
# put in headings (<a name="x"></a>) for all-link content, and dropped every such heading.
_HTML_PRUNE = [
    "//div[@class='header']",
    "//div[contains(concat(' ', normalize-space(@class), ' '), ' nav-panel ')]",
    "//*[self::div or self::section][contains(concat(' ', normalize-space(@class), ' '), ' toc ')"
    " or @id='toc' or translate(@id, '-', '_')='table_of_contents']"
    "[p or h1 or h2 or h3 or h4 or h5 or h6]",
    "//a[contains(concat(' ', normalize-space(@class), ' '), ' headerlink ')]",
    "//a[contains(concat(' ', normalize-space(@class), ' '), ' copiable-link ')]",
    "//*[self::h1 or self::h2 or self::h3 or self::h4 or self::h5 or self::h6]"
    "//a[starts-with(@href, '#')][string-length(normalize-space()) <= 1]",
    "//a[not(normalize-space()) and not(.//img)]",
]
# trafilatura deletes any span, p, div or section whose class or id holds one of its
# boilerplate words ("menu", "meta", "bar", "button", "tags", "widget", "embed", "message",
# ...), keeping the text after it: Sphinx's <p>Choose <span class="menuselection">File ‣
# Save As</span> to save.</p> lost the menu path, mid-sentence. Inline elements in prose
# lose their class and id before extraction (after the pruning above, which reads them), so
# only blocks are judged by theirs; those that say hidden keep them (and still go).
_INLINE_IN_PROSE = (
    "//*[self::span or self::a or self::em or self::strong or self::b or self::i or self::u"
    " or self::code or self::kbd or self::samp or self::var or self::tt or self::abbr"
    " or self::cite or self::dfn or self::mark or self::small or self::sub or self::sup"
    " or self::q or self::s or self::del or self::ins or self::time or self::data]"
    "[@class or @id]"
    "[ancestor::*[self::p or self::li or self::td or self::th or self::dd or self::dt"
    " or self::h1 or self::h2 or self::h3 or self::h4 or self::h5 or self::h6 or self::pre"
    " or self::blockquote]]"
)
_HIDDEN = re.compile(r"hidden|(?:^|[\s_-])hide(?:$|[\s_-])|noprint")
# trafilatura looks for a content container (<main>, <article>, class="content", ...); on a
# page without one it only recovers loose paragraphs and code, dropping headings and lists:
# every Texinfo manual page. Such a page's <body> is wrapped in a <main>, so the ordinary
# extraction (headings kept, boilerplate pruned) runs on it. Not when something main-like
# exists: trafilatura's last container rule takes the first <main> or element whose class,
# id or role starts with "main", and a wrapper around everything would come first.
_MAIN_LIKE = (
    "//main|//*[self::article or self::div or self::section][starts-with(@class, 'main')"
    " or starts-with(@id, 'main') or starts-with(@role, 'main')]"
)
# The page title, restored when trafilatura took a container below it (<h1>Title</h1><div
# class="content">...): not a site logo (<h1><a>Name</a></h1>), nor in a sidebar or footer,
# nor the site's name in the page's <header> (an article's <header> holds its title).
_PAGE_H1 = (
    "//h1[normalize-space(text())][not(ancestor::nav or ancestor::aside or ancestor::footer"
    " or ancestor::header[not(ancestor::article or ancestor::main or ancestor::*[@role='main'])]"
    " or ancestor::*[contains(@role, 'navigation') or contains(@class, 'sidebar')])]"
)
# Texinfo navigation that no markup gave away (makeinfo 4 put it in div.node): "Next: X,
# Previous: Y, Up: Z   [Contents][Index]".
_NAV_PART = re.compile(r"(?:Next|Previous|Prev|Up|Top|Contents)\s*:\s*\S.*")
_NAV_TAIL = re.compile(r"(?:\s*\[[^\]]*\])+\s*$")


def _without_pilcrow(text: str) -> str:
    """``text`` less a final "¶" (a heading's permalink sign, when not a headerlink) and the
    whitespace around it. Not a pattern: one (spaces, the sign, spaces, the end) is
    quadratic in a run of spaces, and an <h1> of 100,000 spaces took 30 s."""
    stripped = text.rstrip()
    return stripped[:-1].rstrip() if stripped.endswith("\u00b6") else text


# Page elements that end a heading's own text: an unclosed <h1> swallows what follows it.
_SOURCE_BLOCKS = {"p", "div", "ul", "ol", "dl", "li", "table", "pre", "blockquote", "section"}
_SOURCE_BLOCKS |= {f"h{level}" for level in range(1, 7)}
# trafilatura elements that start a new line in a text; <code> is both a block and inline.
_XML_BLOCKS = {"p", "list", "item", "quote", "head", "table", "row", "cell"}


class _XmlNode(Protocol):
    """What the conversion uses of an lxml element (lxml ships no type information)."""

    tag: str
    text: str | None
    tail: str | None
    sourceline: int | None

    def get(self, key: str) -> str | None: ...
    def itertext(self) -> Iterator[str]: ...
    def __iter__(self) -> Iterator[_XmlNode]: ...


def _html_blocks(text: str) -> list[Block]:
    """The main content of an HTML page: no navigation, sidebars, banners or footers."""
    try:
        blocks = _main_content_blocks(text)
    except Exception:
        # trafilatura is heuristics over odd markup: a failure in it must cost one page its
        # boilerplate removal (the fallback below), not stop an ingest.
        blocks = []
    if not any(not block.heading for block in blocks):
        # Fallback: trafilatura found no main content (a page that is only navigation or
        # links, markup it cannot parse) or only headings. The page is then read whole, as
        # before trafilatura, by BeautifulSoup with <nav>, <footer>, scripts and styles left
        # out: a page with text never comes out silently empty, at worst with navigation.
        # (Texinfo "Next: ..." lines still go: a menu page is the typical case here.)
        blocks = [b for b in _soup_blocks(text) if not _is_nav_line(b.text)]
    return blocks


@lru_cache(maxsize=1)
def _trafilatura_config() -> ConfigParser:
    from trafilatura.settings import use_config

    config = use_config()
    # Under MIN_EXTRACTED_SIZE characters (250 by default) trafilatura distrusts what it
    # found and swaps in its whole-page "baseline" text: a short page (an FAQ answer, a
    # release note) became one paragraph with its menu and without its headings. A short
    # page is a fine document here. At 0 that rescue is off, and a page where trafilatura
    # finds nothing comes back empty: the BeautifulSoup fallback then reads it, headings
    # and list items apart, rather than as one flat paragraph.
    config.set("DEFAULT", "MIN_EXTRACTED_SIZE", "0")
    return config


def _main_content_blocks(text: str) -> list[Block]:
    import trafilatura

    tree = trafilatura.load_html(text)
    if tree is None or tree.tag != "html" or tree.find("body") is None:
        # A fragment ("<h2>..</h2><p>..</p>"): load_html wants a whole document. Same
        # first line, so source lines still hold.
        tree = trafilatura.load_html(f"<html><body>{text}</body></html>")
        if tree is None or tree.find("body") is None:
            return []
    # Before the <main> wrapper below: a <header> in a <main> is an article's, not the site's.
    page_h1 = next((h for h in map(_heading_text, tree.xpath(_PAGE_H1)) if h[0]), None)
    for expression in _HTML_PRUNE:
        for element in tree.xpath(expression):
            element.drop_tree()  # its tail text stays
    for element in tree.xpath(_INLINE_IN_PROSE):
        if not _HIDDEN.search(f"{element.get('class', '')} {element.get('id', '')}"):
            element.attrib.pop("class", None)
            element.attrib.pop("id", None)
    if not tree.xpath(_MAIN_LIKE):
        body = tree.find("body")
        main = body.makeelement("main", {})
        main.text, body.text = body.text, None
        main.extend(list(body))
        body.append(main)
    # fast: no second opinion from readability/jusText, whose output is HTML or bare
    # paragraphs rather than trafilatura's XML (headings lost), at some 20% of the time;
    # the BeautifulSoup fallback covers what trafilatura misses. Tables kept; link
    # targets, bold/italic marks, images, comment sections and metadata (dates, authors)
    # are not wanted in passages.
    result = trafilatura.bare_extraction(
        tree,
        fast=True,
        include_comments=False,
        include_tables=True,
        include_images=False,
        include_links=False,
        include_formatting=False,
        with_metadata=False,
        config=_trafilatura_config(),
    )
    body = getattr(result, "body", None)
    if body is None:
        return []
    blocks = [(b, line) for b, line in _xml_blocks(body) if b.text and not _is_nav_line(b.text)]
    lines = _SourceLines(text)
    located = lines.locate(blocks)
    if page_h1 and not any(b.heading and b.level == 1 for b in located):
        located.insert(0, lines.locate_title(Block(page_h1[0], heading=True, level=1), page_h1[1]))
    return located


def _heading_text(heading: _XmlNode) -> tuple[str, int | None]:
    """An lxml heading's text, up to any block in it (an unclosed <h1> swallows the page)."""
    parts = [heading.text or ""]
    for child in heading:
        if child.tag in _SOURCE_BLOCKS:
            break
        parts += [*child.itertext(), child.tail or ""]
    text = _squash(_without_pilcrow("".join(parts)))
    return (text if len(text) <= 300 else ""), heading.sourceline


def _xml_blocks(body: _XmlNode) -> Iterator[tuple[Block, int | None]]:
    """Blocks from trafilatura's XML, each with its element's source line if it kept it."""
    for node in body:
        if node.tag == "head":
            rend = node.get("rend") or ""
            level = int(rend[1]) if len(rend) == 2 and rend[1] in "123456" else 2
            text = _squash(_without_pilcrow(_xml_text(node)))
            yield Block(text, heading=True, level=level), node.sourceline
        elif node.tag == "list":
            # One block per item, as before; a nested list stays in its item's text.
            for item in node:
                yield Block(_squash(_xml_text(item))), item.sourceline
        elif node.tag == "table":
            # One block per row, cells apart: a row's values stay together.
            for row in node:
                cells = [_squash(_xml_text(cell)) for cell in row]
                yield Block(" | ".join(c for c in cells if c)), row.sourceline
        elif node.tag == "code" or (node.tag == "quote" and _preformatted(node)):
            # <pre> comes out as <code>, or as <quote> when trafilatura saw no code in it.
            yield Block(normalize(_xml_text(node)).strip("\n").rstrip()), node.sourceline
        else:  # p, quote, and whatever else it emits: text with whitespace squashed
            yield Block(_squash(_xml_text(node))), node.sourceline


def _xml_text(node: _XmlNode) -> str:
    """All the text under a node; line breaks (<lb>) and nested blocks start new lines."""
    parts = [node.text or ""]
    for child in node:
        if child.tag == "lb":
            parts.append("\n")
        elif child.tag in _XML_BLOCKS:
            parts.append("\n" + _xml_text(child) + "\n")
        else:
            parts.append(_xml_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _preformatted(node: _XmlNode) -> bool:
    """A <quote> that was a <pre>: lines of text rather than paragraphs."""
    return "\n" in (node.text or "").strip() and not any(c.tag in _XML_BLOCKS for c in node)


def _squash(text: str) -> str:
    return normalize(" ".join(text.split()))


def _is_nav_line(text: str) -> bool:
    """Two or more "Label: target" parts, or one with a [Index] tail; not "Next: run it."."""
    if len(text) >= 300:  # first: _NAV_TAIL is slow on long texts
        return False
    body = _NAV_TAIL.sub("", text)
    parts = body.split(",")
    return (len(parts) > 1 or body != text) and all(
        _NAV_PART.fullmatch(part.strip()) for part in parts
    )


class _SourceLines:
    """Source lines for extracted blocks, found by looking their text up in the page.

    trafilatura rebuilds most elements, so it loses most source lines. The page's text is
    laid out without markup, comments, <script>/<style>/<title> content, whitespace,
    invisible characters and "|", each piece knowing its line. A block's first characters,
    looked for from its element's line when trafilatura kept it, else from where the
    previous block ended, give its first line, and its last characters its last. A block
    whose text is not in the page as such gets no lines.

    Each lookup covers a stretch of the page ahead (:attr:`_WINDOW`, or more for a long
    block), not the rest of it: one per block to the page's end made a page whose blocks
    were not found quadratic. A few per page still go to its end (content after much
    navigation that no source line points to).
    """

    _MARKUP = re.compile(
        r"<!--.*?(?:-->|$)|<(script|style|title|textarea)\b.*?(?:</\1\s*>|$)"
        r"|</?[A-Za-z!?][^>]*>?",
        re.DOTALL | re.IGNORECASE,
    )
    _KEY = 40  # characters (whitespace aside) looked up at each end of a block
    _WINDOW = 65536  # characters of flat text a block is looked for in
    _FAR_LOOKUPS = 4  # lookups per page that go on to the page's end

    def __init__(self, source: str) -> None:
        pieces: list[str] = []
        self._starts: list[int] = []  # where each piece starts in the flat text
        self._lines: list[int] = []  # and its source line
        size, line, position = 0, 1, 0
        for match in [*self._MARKUP.finditer(source), None]:
            end = match.start() if match else len(source)
            for number, raw in enumerate(source[position:end].split("\n"), start=line):
                piece = self._flatten(html.unescape(raw))
                if piece:
                    pieces.append(piece)
                    self._starts.append(size)
                    self._lines.append(number)
                    size += len(piece)
            if match is not None:
                line += source.count("\n", position, match.end())
                position = match.end()
        self._flat = "".join(pieces)

    def locate(self, blocks: list[tuple[Block, int | None]]) -> list[Block]:
        located: list[Block] = []
        cursor, far = 0, self._FAR_LOOKUPS
        for block, hint in blocks:
            key = self._flatten(block.text)
            reach = max(self._WINDOW, 8 * len(key))
            span = self._span(key, hint, cursor, reach)
            if span is None and far and cursor + reach < len(self._flat):
                far -= 1
                span = self._span(key, hint, cursor, len(self._flat))
            if span is None:
                located.append(block)
                continue
            cursor = span[1] + 1
            located.append(
                replace(block, line_start=self._line(span[0]), line_end=self._line(span[1]))
            )
        return located

    def locate_title(self, title: Block, hint: int | None) -> Block:
        """A page title restored from outside the content: looked for in the whole page,
        from its own line if known (it may come after the content in the page)."""
        span = self._span(self._flatten(title.text), hint, 0, len(self._flat))
        if span is None:
            return title
        return replace(title, line_start=self._line(span[0]), line_end=self._line(span[1]))

    def _span(self, key: str, hint: int | None, cursor: int, reach: int) -> tuple[int, int] | None:
        """Where a block's flat text starts and ends in the page's, looked for from its line
        ``hint`` then from ``cursor``, each time within ``reach`` characters."""
        head, tail = key[: self._KEY], key[-self._KEY :]
        if not head:
            return None
        start = -1
        if hint is not None:
            index = bisect.bisect_left(self._lines, hint)
            if index < len(self._starts):
                begin = max(cursor, self._starts[index])
                start = self._flat.find(head, begin, begin + reach)
        if start < 0:
            start = self._flat.find(head, cursor, cursor + reach)
        if start < 0:
            return None
        end = start + len(head) - 1
        if len(key) > len(head):
            # Where the block would end if its text were the page's, a little before as a
            # block can have characters the page has not, a little after as the page can
            # have characters the block has not.
            begin = start + max(0, len(key) - len(tail) - 16)
            found = self._flat.find(tail, begin, start + 2 * len(key))
            end = found + len(tail) - 1 if found >= 0 else end
        return start, end

    def _line(self, offset: int) -> int:
        return self._lines[bisect.bisect_right(self._starts, offset) - 1]

    @staticmethod
    def _flatten(text: str) -> str:
        """Text as compared: no whitespace, no "|" (table rows' cell separators), and no
        invisible characters (soft hyphens, zero-width spaces), which :func:`normalize`
        takes out of the blocks' text."""
        text = unicodedata.normalize("NFC", "".join(text.split())).replace("|", "")
        if text.isprintable():  # the common case, fast: no category C character
            return text
        return "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")


def _soup_blocks(text: str) -> list[Block]:
    """The whole page's text blocks, navigation elements aside: the fallback reader."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    for unwanted in soup(["script", "style", "nav", "footer", "noscript", "template"]):
        unwanted.decompose()
    blocks: list[Block] = []
    for element in soup.find_all(
        ["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "blockquote", "td", "dt", "dd"]
    ):
        if element.find_parent(["p", "li", "pre", "blockquote", "td"]):
            continue  # nested: its text is already part of the parent block
        content = normalize(
            " ".join(element.get_text(" ").split()) if element.name != "pre" else element.get_text()
        )
        if not content.strip():
            continue
        heading = element.name[0] == "h" and element.name[1:].isdigit()
        blocks.append(
            Block(
                content.strip(),
                heading=heading,
                level=int(element.name[1]) if heading else 0,
                line_start=getattr(element, "sourceline", None),
            )
        )
    if not blocks:
        # Text in no such element (bare text in <body>, in <div>s): its lines, as a text file.
        root = soup.body or soup
        for unwanted in root(["head", "title"]):
            unwanted.decompose()
        blocks = [Block(_squash(b.text)) for b in _line_blocks(root.get_text("\n"), markdown=False)]
    return blocks


def _pdf_blocks(path: Path) -> list[Block]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise UnusableFileError(f"unreadable PDF: {exc}") from None
    except Exception as exc:
        # pypdf meets a damaged file with whatever its code hits first (TypeError comparing
        # a dictionary to a number, AssertionError, IndexError, RecursionError): a broken PDF
        # must cost the ingest that one file, not stop it.
        raise UnusableFileError(f"unreadable PDF: {type(exc).__name__}: {exc}") from None
    blocks = []
    for number, page_text in enumerate(pages, start=1):
        for block in _line_blocks(page_text, markdown=False):
            blocks.append(Block(block.text, page=number))
    return blocks


def _jsonl_documents(path: Path, relative: str, text_field: str) -> Iterator[Document]:
    # Split at '\n' only, not with str.splitlines(): that also splits at U+2028, U+0085 and
    # other separators a JSON string may hold unescaped, and cut such a record in two.
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise UnusableFileError(f"line {number} is not JSON: {exc}") from None
        except RecursionError:  # json decodes nested arrays and objects recursively
            raise UnusableFileError(f"line {number} is not JSON: nested too deeply") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise UnusableFileError(f"line {number} has no string field {text_field!r}")
        body = record.pop(text_field)
        doc_key = str(record.pop("id", number))
        blocks = [
            Block(b.text, heading=b.heading, level=b.level, line_start=number, line_end=number)
            for b in _line_blocks(body, markdown=False)
        ]
        if blocks:
            yield Document(f"{relative}#{doc_key}", str(path), "jsonl", blocks, metadata=record)


def load_file(
    path: Path, relative: str, *, text_field: str = "text", max_bytes: int = MAX_FILE_BYTES
) -> list[Document]:
    """The documents in one file; raises :class:`UnusableFileError` saying why it cannot be used."""
    file_type = SUFFIXES.get(path.suffix.lower())
    if file_type is None:
        raise UnusableFileError(
            f"unsupported file type {path.suffix or '(none)'}; supported: "
            + ", ".join(sorted(SUFFIXES))
        )
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnusableFileError(f"unreadable: {exc.strerror}") from None
    if size == 0:
        raise UnusableFileError("empty file")
    if size > max_bytes:
        raise UnusableFileError(f"too large ({size:,} bytes > {max_bytes:,})")
    try:
        if file_type == "jsonl":
            documents = list(_jsonl_documents(path, relative, text_field))
        elif file_type == "pdf":
            documents = [Document(relative, str(path), "pdf", _pdf_blocks(path))]
        elif file_type == "html":
            documents = [Document(relative, str(path), "html", _html_blocks(_read_text(path)))]
        else:
            blocks = _line_blocks(_read_text(path), markdown=file_type == "markdown")
            documents = [Document(relative, str(path), file_type, blocks)]
    except PermissionError as exc:
        raise UnusableFileError(f"unreadable: {exc.strerror}") from None
    documents = [d for d in documents if d.blocks]
    if not documents:
        raise UnusableFileError("no text in it")
    return documents


def iter_files(paths: list[Path]) -> Iterator[tuple[Path, str]]:
    """Every file under ``paths`` (sorted, hidden files skipped) with its stable relative id."""
    for root in paths:
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                parts = path.relative_to(root).parts
                if path.is_file() and not any(p.startswith(".") for p in parts):
                    yield path, "/".join(parts)
        else:
            yield root, root.name


def load_paths(paths: list[Path], **options: Any) -> tuple[list[Document], list[Skipped]]:
    """Load every supported file under ``paths``; unusable ones are returned as skipped."""
    documents: list[Document] = []
    skipped: list[Skipped] = []
    for root in paths:
        if not root.exists():
            skipped.append(Skipped(str(root), "does not exist"))
    for path, relative in iter_files([p for p in paths if p.exists()]):
        try:
            documents.extend(load_file(path, relative, **options))
        except UnusableFileError as exc:
            skipped.append(Skipped(str(path), str(exc)))
    return documents, skipped
