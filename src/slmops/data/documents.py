"""Read files into documents: Markdown, plain text, HTML, PDF and JSONL.

Each document is a list of blocks (a heading, a paragraph, a list item, a PDF page's
paragraph) that know where they came from (a line span or a page), so chunks can cite their
source. Files that cannot be used are reported by path and reason, never fatal.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


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


class UnusableFileError(Exception):
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
            blocks.append(
                Block(
                    heading.group(2),
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


def _html_blocks(text: str) -> list[Block]:
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
    return blocks


def _pdf_blocks(path: Path) -> list[Block]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise UnusableFileError(f"unreadable PDF: {exc}") from None
    blocks = []
    for number, page_text in enumerate(pages, start=1):
        for block in _line_blocks(page_text, markdown=False):
            blocks.append(Block(block.text, page=number))
    return blocks


def _jsonl_documents(path: Path, relative: str, text_field: str) -> Iterator[Document]:
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise UnusableFileError(f"line {number} is not JSON: {exc}") from None
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
