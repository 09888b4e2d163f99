from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slmops.data.chunking import Chunker
from slmops.data.documents import Block, Document, load_paths

# Pages in the shapes that Texinfo, Sphinx, MkDocs and DocBook generate, navigation included.
PAGES = Path(__file__).parent / "html_pages"

MARKDOWN = """# Guide

Intro paragraph.

## Install

```bash
# not a heading inside a fence
pip install slmops
```

Run it.
"""


def test_markdown_blocks_keep_headings_lines_and_fences(docs):
    (docs / "guide.md").write_text(MARKDOWN)
    [doc], skipped = load_paths([docs])
    assert skipped == []
    assert doc.doc_id == "guide.md" and doc.file_type == "markdown"
    headings = [(b.level, b.text) for b in doc.blocks if b.heading]
    assert headings == [(1, "Guide"), (2, "Install")]
    fence = next(b for b in doc.blocks if "pip install" in b.text)
    assert "# not a heading" in fence.text and (fence.line_start, fence.line_end) == (7, 10)


def test_plain_text_html_jsonl_and_pdf(docs):
    (docs / "notes.txt").write_text("First para.\r\n\r\nSecond\u00a0para.\n")
    (docs / "page.html").write_text(
        "<html><head><style>p{}</style></head><body><h2>Title</h2><p>Hello <b>bold</b> world."
        "</p><ul><li>item <a href='#'>one</a></li></ul><script>evil()</script></body></html>"
    )
    (docs / "records.jsonl").write_text(
        '{"id": "faq-1", "text": "How to install?", "lang": "en"}\n\n{"text": "Second."}\n'
    )
    pdf = docs / "paper.pdf"
    pdf.write_bytes(_tiny_pdf(["Page one text.", "Page two text."]))
    documents, skipped = load_paths([docs])
    assert skipped == []
    by_id = {d.doc_id: d for d in documents}
    assert [b.text for b in by_id["notes.txt"].blocks] == ["First para.", "Second\u00a0para."]
    html = by_id["page.html"]
    assert [(b.heading, b.text) for b in html.blocks] == [
        (True, "Title"),
        (False, "Hello bold world."),
        (False, "item one"),
    ]
    assert "evil" not in html.text
    assert by_id["records.jsonl#faq-1"].metadata == {"lang": "en"}
    assert by_id["records.jsonl#3"].text == "Second."
    assert [(b.page, b.text) for b in by_id["paper.pdf"].blocks] == [
        (1, "Page one text."),
        (2, "Page two text."),
    ]


def test_unusable_files_are_reported_by_path_and_skipped(docs):
    (docs / "good.md").write_text("Fine.")
    (docs / "empty.txt").write_text("")
    (docs / "blank.txt").write_text("\n\n   \n")
    (docs / "binary.txt").write_bytes(b"abc\x00\x01\x02")
    (docs / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (docs / "image.png").write_bytes(b"\x89PNG")
    (docs / "bad.jsonl").write_text('{"text": "ok"}\n{not json}\n')
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    (docs / "big.txt").write_text("x" * 2000)
    locked = docs / "locked.txt"
    locked.write_text("secret")
    locked.chmod(0)
    try:
        documents, skipped = load_paths([docs, docs / "missing"], max_bytes=1000)
    finally:
        locked.chmod(0o644)
    root = os.geteuid() == 0  # root can read a file whatever its mode
    assert [d.doc_id for d in documents] == ["good.md"] + (["locked.txt"] if root else [])
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert reasons["empty.txt"] == "empty file"
    assert reasons["blank.txt"] == "no text in it"
    assert reasons["binary.txt"] == "binary content (NUL bytes)"
    assert reasons["latin1.txt"].startswith("not UTF-8 text")
    assert reasons["image.png"].startswith("unsupported file type .png")
    assert reasons["bad.jsonl"].startswith("line 2 is not JSON")
    assert reasons["broken.pdf"].startswith("unreadable PDF")
    assert reasons["big.txt"] == "too large (2,000 bytes > 1,000)"
    assert reasons["missing"] == "does not exist"
    if not root:
        assert reasons["locked.txt"].startswith("unreadable")


def html_document(docs: Path, page: str) -> Document:
    """One saved page read through the public loader."""
    shutil.copy(PAGES / page, docs / page)
    [document], skipped = load_paths([docs / page])
    assert skipped == []
    return document


def headings(document: Document) -> list[tuple[int, str]]:
    return [(b.level, b.text) for b in document.blocks if b.heading]


def body_texts(document: Document) -> list[str]:
    return [b.text for b in document.blocks if not b.heading]


def block_with(document: Document, text: str) -> Block:
    return next(b for b in document.blocks if text in b.text)


@pytest.mark.parametrize("page", ["texinfo_header.html", "texinfo_nav_panel.html"])
def test_texinfo_pages_lose_their_next_previous_up_panels(docs, page):
    document = html_document(docs, page)
    for navigation in ("Next:", "Previous:", "Up:", "[Index]", "Thread Safety", "Using libffi"):
        assert navigation not in document.text
    assert "\u00b6" not in document.text  # the copiable-link pilcrows in Texinfo 7 headings
    [(level, title)] = headings(document)
    assert level == 3 and title in {"2.5 Closure Example", "2.1 The Basics"}
    assert len(body_texts(document)) >= 4


def test_texinfo_blocks_keep_paragraphs_code_lists_and_source_lines(docs):
    document = html_document(docs, "texinfo_header.html")
    assert [(b.heading, b.text[:40], b.line_start, b.line_end) for b in document.blocks] == [
        (True, "2.5 Closure Example", 30, 30),
        (False, "A trivial example that creates a new put", 32, 33),
        (False, "#include <stdio.h>\n#include <ffi.h>\n\n/* ", 36, 44),
        (False, "The closure is allocated with ffi_closur", 47, 49),
        (False, "The writable address is used to fill in ", 52, 52),
        (False, "The executable address is the one that i", 53, 53),
    ]
    assert document.blocks[1].text.endswith("binding fputs with stdout.")  # inline code spacing
    assert "  *(ffi_arg *)ret = fputs(" in document.blocks[2].text  # <pre> keeps its lines


def test_sphinx_page_keeps_the_article_not_sidebar_related_bar_banner_or_footer(docs):
    document = html_document(docs, "sphinx_sidebar.html")
    assert headings(document) == [
        (1, "Configuration"),
        (2, "The settings file"),
        (2, "Environment variables"),
    ]
    for boilerplate in (
        "Navigation",  # related bar and sidebar titles
        "previous",
        "Previous:",
        "Next:",
        "Related Topics",
        "Quick search",
        "Installation",  # sidebar table of contents
        "cookies",
        "Accept",
        "Powered by",
        "Widget Makers",  # footer copyright
        "\u00b6",  # headerlink pilcrows
    ):
        assert boilerplate not in document.text, boilerplate
    texts = body_texts(document)
    assert texts[0].startswith("Widgetlib reads its settings from a TOML file named widgets.toml")
    assert "Key | Default" in texts and "cache.size | 256 entries" in texts  # a block per row
    assert "[cache]\nsize = 512" in texts
    assert "WIDGETS_CACHE__TTL sets how long entries live." in texts
    heading = block_with(document, "The settings file")
    assert (heading.line_start, heading.line_end) == (42, 42)
    assert block_with(document, "cache.size").line_start == 56


def test_mkdocs_page_keeps_the_article_not_header_navs_footer_or_consent(docs):
    document = html_document(docs, "mkdocs_material.html")
    assert headings(document) == [(1, "Tutorial"), (2, "Your first widget"), (3, "Styling")]
    for boilerplate in (
        "Skip to content",
        "Search",
        "Getting started",
        "API reference",
        "Table of contents",
        "Previous",
        "Next",
        "Copyright",
        "cookies",
    ):
        assert boilerplate not in document.text, boilerplate
    assert body_texts(document)[-2:] == ["Pick a base theme.", "Override the accent colour."]
    # "Tutorial" is also the header's title (line 16): the h1 is found where it is.
    assert block_with(document, "Tutorial").line_start == 50


def test_docbook_headings_with_name_anchors_are_kept_and_toc_and_nav_tables_are_not(docs):
    # <h2><a name="x"></a>4.1. Overview</h2>: trafilatura alone drops such headings.
    document = html_document(docs, "docbook_anchors.html")
    assert headings(document) == [
        (1, "4. Widgetcheck: a widget error detector"),
        (2, "4.1. Overview"),
        (2, "4.2. Command-line options"),
    ]
    for navigation in ("Table of Contents", "3. The core", "Cachewidget", "Home", "Up"):
        assert navigation not in document.text, navigation
    assert body_texts(document) == [
        "To use this tool, specify --tool=widgetcheck on the command line.",
        "Widgetcheck detects widgets that are drawn before they are sized, and widgets that are"
        " freed while still on screen.",
        "--strict=<yes|no> [default: no]",
        "Report a widget drawn before its layout pass as an error.",
    ]
    assert [b.line_start for b in document.blocks] == [18, 26, 30, 31, 36, 38, 39]


def test_heading_permalink_signs_are_not_heading_text(docs):
    (docs / "api.html").write_text(
        "<html><body><main>"
        "<h2>File system<span><a class='mark' href='#file-system'>#</a></span></h2>"
        "<p>The node:fs module enables interacting with the file system.</p>"
        "<h3><a href='#examples' class='doc-anchor'>\u00a7</a>Examples</h3>"
        "<p>Reading a file <a href='#x'>x</a> in one call.</p></main></body></html>"
    )
    [document], _ = load_paths([docs])
    assert headings(document) == [(2, "File system"), (3, "Examples")]
    assert body_texts(document)[1] == "Reading a file x in one call."  # other links keep text


def test_html_headings_still_make_chunk_sections(docs):
    document = html_document(docs, "sphinx_sidebar.html")
    chunks = Chunker(lambda text: len(text.split()), chunk_tokens=40, overlap_tokens=0).chunk(
        document
    )
    sections = {c.section for c in chunks}
    assert "Configuration > The settings file" in sections
    assert "Configuration > Environment variables" in sections
    assert all(c.line_start is not None for c in chunks)


def test_a_page_that_is_only_navigation_falls_back_to_the_whole_page(docs):
    # trafilatura finds no main content in a list of links: the page is read as before.
    document = html_document(docs, "nav_only.html")
    assert [(b.text, b.line_start) for b in document.blocks] == [
        ("Installation", 7),
        ("Configuration", 8),
        ("Deployment", 9),
        ("Frequently asked questions", 10),
    ]


def test_a_trafilatura_failure_falls_back_to_the_whole_page(docs, monkeypatch):
    import trafilatura

    def broken(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(trafilatura, "bare_extraction", broken)
    document = html_document(docs, "sphinx_sidebar.html")
    assert "Widgetlib reads its settings" in document.text
    assert any(b.heading and b.text.startswith("Environment variables") for b in document.blocks)
    assert "Quick search" in document.text  # the fallback's price: navigation is kept


def test_bare_text_in_html_is_not_lost(docs):
    (docs / "bare.html").write_text("<html><body><div>Text with no paragraph\naround it.</div>")
    [document], skipped = load_paths([docs])
    assert skipped == [] and document.text == "Text with no paragraph around it."


def test_malformed_html_is_read_without_its_menu(docs):
    document = html_document(docs, "malformed.html")
    assert headings(document) == [(1, "Release notes"), (2, "Version 3.1"), (2, "Version 3.0")]
    assert body_texts(document) == [
        "Version 3.1 fixes the cache eviction bug that lost entries under load",
        "Upgrading is safe: the file format did not change & old caches are read as before.",
        "New --dry-run flag shows what would change",
        "Faster start-up when the cache is cold",
        "The first release with a stable on-disk format; caches written by 2.x are converted once.",
        "3.0 | 2024-01-15",
        "3.1 | 2024-05-02",
        "Unterminated entity & broken \u00a9 text at the end",
    ]
    assert [b.line_start for b in document.blocks][:4] == [5, 6, 7, 8]


def test_short_pages_keep_their_headings_and_lose_their_chrome(docs):
    # Under 250 characters trafilatura would swap in its flat whole-page text, menu included.
    (docs / "faq.html").write_text(
        "<html><body><header><a href='/'>Home</a> <a href='/docs'>Docs</a></header>"
        "<main><h1>FAQ</h1><h2>Does it run offline?</h2><p>Yes, after the first download.</p>"
        "</main><footer>(c) 2024 Widget Makers</footer></body></html>"
    )
    [document], _ = load_paths([docs])
    assert [(b.level, b.text) for b in document.blocks] == [
        (1, "FAQ"),
        (2, "Does it run offline?"),
        (0, "Yes, after the first download."),
    ]


def test_prose_that_starts_like_navigation_is_kept(docs):
    (docs / "steps.html").write_text(
        "<html><body><main><h1>Steps</h1><p>Build the widget first.</p>"
        "<p>Next: run the tests.</p><p>Next: deploy, then watch the logs.</p>"
        "<p>Next: Deploying, Previous: Building, Up: Guide</p></main></body></html>"
    )
    [document], _ = load_paths([docs])
    assert body_texts(document) == [
        "Build the widget first.",
        "Next: run the tests.",
        "Next: deploy, then watch the logs.",
    ]


def test_the_page_h1_heads_the_document_when_outside_the_content_container(docs):
    (docs / "post.html").write_text(
        "<html><head><title>Blog - Caching tips</title></head><body>\n"
        "<header><h1 class='logo'><a href='/'>Widget blog</a></h1></header>\n"
        "<h1>Caching tips</h1>\n"
        "<div class='entry-content'><p>Cache what is expensive to compute and cheap to store."
        "</p>\n<h2>Eviction</h2><p>Least recently used eviction is a good default.</p></div>\n"
        "</body></html>"
    )
    [document], _ = load_paths([docs])
    assert headings(document) == [(1, "Caching tips"), (2, "Eviction")]
    assert document.blocks[0].line_start == 3  # the h1, not the <title>
    assert "Widget blog" not in document.text


def test_a_site_name_in_the_page_header_is_not_the_title(docs):
    (docs / "post.html").write_text(
        "<html><body>\n<header><h1>Widget blog</h1></header>\n<h1>Caching tips</h1>\n"
        "<div class='entry-content'><p>Cache what is expensive to compute.</p></div>\n"
        "</body></html>"
    )
    (docs / "article.html").write_text(
        "<html><body>\n<header><h1>Widget blog</h1></header>\n<article>\n"
        "<header><h1>Eviction</h1></header>\n"  # an article's own header holds its title
        "<div class='entry-content'><p>Least recently used eviction is a good default.</p>"
        "</div></article></body></html>"
    )
    article, post = load_paths([docs])[0]
    assert headings(post) == [(1, "Caching tips")]
    assert post.blocks[0].line_start == 3
    assert headings(article) == [(1, "Eviction")]
    assert "Widget blog" not in post.text + article.text


def test_inline_elements_with_boilerplate_class_names_keep_their_text(docs):
    # trafilatura deletes elements whose class holds "menu", "meta", "button", ...
    (docs / "save.html").write_text(
        "<html><body><div class='body' role='main'><h1>Saving</h1>\n"
        "<p>Choose <span class='menuselection'>File \u2023 Save As</span> to save a copy.</p>\n"
        "<ul><li>Press <kbd class='kbd button'>Ctrl+S</kbd> often.</li></ul>\n"
        "<p>Edit <code class='meta-file'>widgets.toml</code> first.</p></div></body></html>"
    )
    [document], _ = load_paths([docs])
    assert body_texts(document) == [
        "Choose File \u2023 Save As to save a copy.",
        "Press Ctrl+S often.",
        "Edit widgets.toml first.",
    ]
    assert [b.line_start for b in document.blocks] == [1, 2, 3, 4]


def test_invisible_characters_do_not_cost_blocks_their_source_lines(docs):
    # normalize() drops soft hyphens, zero-width spaces and marks; the page keeps them.
    def page(paragraphs: int) -> str:
        return (
            "<html><body><main><h1>Caching</h1>\n"
            + "".join(
                f"<p>Para\u00adgraph {i} on cache evic&shy;tion and\u200b re\u200efills.</p>\n"
                for i in range(paragraphs)
            )
            + "</main></body></html>"
        )

    (docs / "small.html").write_text(page(3))
    [document], _ = load_paths([docs / "small.html"])
    assert body_texts(document)[2] == "Paragraph 2 on cache eviction and refills."
    assert [b.line_start for b in document.blocks] == [1, 2, 3, 4]
    # A large page: every block is found (looking up each unfound one to the page's end was
    # quadratic: seconds for a few hundred kilobytes).
    (docs / "large.html").write_text(page(8000))
    [document], _ = load_paths([docs / "large.html"])
    assert len(document.blocks) == 8001
    assert [b.line_start for b in document.blocks] == list(range(1, 8002))


def test_deeply_nested_html_is_read(docs):
    depth = 3000
    (docs / "deep.html").write_text(
        "<html><body><h1>Deep</h1>"
        + "<div>" * depth
        + "<p>Buried paragraph.</p>"
        + "</div>" * depth
        + "<ul>"
        + "<li>level" * depth
        + "</ul></body></html>"
    )
    [document], _ = load_paths([docs])
    assert headings(document) == [(1, "Deep")]
    assert body_texts(document)[0] == "Buried paragraph."


def test_reading_documents_does_not_import_trafilatura():
    """The CLI imports the readers; trafilatura (and its lxml, dateparser) load on first HTML."""
    code = "import sys, slmops.data.documents; print('trafilatura' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


def _tiny_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of text per page (no PDF library needed)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    for text in pages:
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        page_id, content_id = len(objects) + 1, len(objects) + 2
        kids.append(f"{page_id} 0 R")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents "
            f"{content_id} 0 R /Resources << /Font << /F1 {len(pages) * 2 + 3} 0 R >> >> >>"
        )
        objects.append(f"<< /Length {len(content)} >>\nstream\n{content.decode()}\nendstream")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)
