from __future__ import annotations

import os
from pathlib import Path

from slmops.data.documents import load_paths

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
