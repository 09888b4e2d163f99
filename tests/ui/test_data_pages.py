"""The data and prompt pages through the ASGI app: corpora with their versions, the diff
between two versions and the search box (on a small corpus ingested once with the shipped
embedder); prompts with their versions, a version's text and the diff between two."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from slmops.data.corpus import corpora_for
from slmops.prompts.registry import PromptRegistry
from slmops.store import Workspace
from slmops.ui import create_console

SCRIPT = "<script>alert('doc')</script>"
FIRST = {
    "install.md": "# Install\n\nInstall slmops with pip install slmops.\n",
    "serve.md": "# Serve\n\nslmops serve starts an OpenAI-compatible server on port 8000.\n",
    "faq.txt": "Refunds take five business days.\n\nSupport answers within one day.\n",
}
SECOND = {
    "install.md": FIRST["install.md"],
    "faq.txt": f"Refunds take ten business days. {SCRIPT}\n\nSupport answers within one day.\n",
    "pumps.md": "# Pumps\n\nThe pump P-101 moves coolant through the loop.\n",
}

embeds = pytest.mark.model  # the corpus is embedded with the shipped embedder


@pytest.fixture(scope="module")
def corpus_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A console over corpus 'kb': version 1, then version 2 (faq changed, serve removed,
    pumps added; tagged release-2)."""
    root = tmp_path_factory.mktemp("data-pages")
    with Workspace.open(root / "ws") as workspace:
        corpora = corpora_for(workspace)
        for number, files in enumerate((FIRST, SECOND), start=1):
            docs = root / f"docs{number}"
            docs.mkdir()
            for name, text in files.items():
                (docs / name).write_text(text)
            corpora.ingest("kb", [docs], message=f"import {number}")
        corpora.tag("kb", 2, "release-2")
        with TestClient(create_console(workspace), base_url="http://127.0.0.1") as client:
            yield client


def flashes(html: str) -> list[str]:
    return re.findall(r'class="flash error" role="alert">([^<]+)<', html)


@embeds
def test_the_data_list_shows_each_corpus(corpus_client: TestClient):
    page = corpus_client.get("/data")
    assert page.status_code == 200
    row = re.search(r'href="/data/kb">kb</a></td>(.*?)</tr>', page.text, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    assert cells[0] == "local:all-minilm-l6-v2"
    assert cells[1:3] == ["2", "3"] and int(cells[3]) >= 3  # versions, documents, chunks
    assert cells[4] == "latest" and "release-2@2" in cells[5]
    assert 'href="/data"' in page.text  # the nav link


@embeds
def test_a_corpus_page_lists_its_versions_with_tags(corpus_client: TestClient):
    page = corpus_client.get("/data/kb")
    assert page.status_code == 200
    text = page.text
    assert "import 1" in text and "import 2" in text
    assert '<span class="tag">release-2</span>' in text
    assert 'href="?a=1&amp;b=2#diff">diff with 1</a>' in text
    assert "local:all-minilm-l6-v2" in text


@embeds
def test_the_diff_names_added_removed_and_changed_documents(corpus_client: TestClient):
    page = corpus_client.get("/data/kb?a=1&b=2")
    assert page.status_code == 200
    changes = re.findall(
        r'<span class="tag change (\w+)">\w+</span></td><td class="mono">([^<]+)</td>', page.text
    )
    assert {(doc.rsplit("/", 1)[-1], kind) for kind, doc in changes} == {
        ("faq.txt", "changed"),
        ("pumps.md", "added"),
        ("serve.md", "removed"),
    }
    assert "kb 1 → 2: 3 documents differ" in page.text
    same = corpus_client.get("/data/kb?a=2&b=2").text
    assert "The two versions hold the same documents." in same


@embeds
def test_search_shows_hits_with_source_and_score_in_each_mode(corpus_client: TestClient):
    for mode in ("text", "vector", "hybrid"):
        page = corpus_client.get(f"/data/kb?q=how+long+do+refunds+take&mode={mode}&k=2")
        assert page.status_code == 200, (mode, flashes(page.text))
        hits = re.findall(r'<li><div class="source">([^<]+) <span', page.text)
        assert 1 <= len(hits) <= 2, mode
        assert hits[0].startswith("faq.txt"), (mode, hits)
        assert re.search(r"score \d", page.text)
        assert f'hits in <span class="mono">kb@2</span> ({mode} search)' in page.text
    # markup in a document is shown as text
    page = corpus_client.get("/data/kb?q=refunds&mode=text&k=1").text
    assert "&lt;script&gt;alert(&#39;doc&#39;)&lt;/script&gt;" in page and SCRIPT not in page
    older = corpus_client.get("/data/kb?q=refunds&mode=text&k=1&v=1").text
    assert "kb@1</span>" in older and "five business days" in older


@embeds
def test_a_bad_query_is_400_naming_each_parameter(corpus_client: TestClient):
    page = corpus_client.get("/data/kb?mode=magic&k=0&a=7&b=1&q=refunds")
    assert page.status_code == 400
    assert flashes(page.text) == [
        "a: not a version of this corpus (versions 1-2)",
        "mode: use one of hybrid, vector, text",
        "k: use a whole number from 1 to 50",
    ]
    half = corpus_client.get("/data/kb?a=1")
    assert half.status_code == 400
    assert flashes(half.text) == ["b: missing: a diff compares two versions, a and b"]
    assert corpus_client.get("/data/kb?k=many").status_code == 400


@embeds
def test_an_unknown_corpus_is_404(corpus_client: TestClient):
    page = corpus_client.get("/data/nope")
    assert page.status_code == 404
    assert "no corpus named &#39;nope&#39; (corpora: kb)" in page.text


# --- prompts (no model needed) ----------------------------------------------------------


@pytest.fixture
def prompt_client(workspace: Workspace) -> Iterator[TestClient]:
    registry = PromptRegistry(workspace)
    registry.add("qa", "Answer: {{ question }}\n", message="first")
    registry.add(
        "qa",
        "Answer briefly: {{ question }}\nCite {{ passages }}\n" + SCRIPT + "\n",
        system="You are careful.",
        message="shorter",
    )
    registry.tag("qa", 1, "production")
    registry.add("greet", "Hello {{ name }}\n")
    with TestClient(create_console(workspace), base_url="http://127.0.0.1") as client:
        yield client


def test_the_prompt_list_shows_latest_versions_variables_and_tags(prompt_client: TestClient):
    page = prompt_client.get("/prompts")
    assert page.status_code == 200
    row = re.search(r'href="/prompts/qa">qa</a></td>(.*?)</tr>', page.text, re.S)
    assert row is not None
    assert '<td class="num">2</td>' in row.group(1)
    assert "passages, question" in row.group(1)
    assert "production@1" in row.group(1) and "shorter" in row.group(1)
    assert 'href="/prompts/greet"' in page.text and 'href="/prompts"' in page.text


def test_a_prompt_page_shows_a_version_and_its_template_as_text(prompt_client: TestClient):
    latest = prompt_client.get("/prompts/qa")
    assert latest.status_code == 200
    text = latest.text
    assert "<h2>qa@2</h2>" in text and "You are careful." in text
    assert "&lt;script&gt;alert(&#39;doc&#39;)&lt;/script&gt;" in text and SCRIPT not in text
    assert 'href="?a=1&amp;b=2#diff">diff with 1</a>' in text
    first = prompt_client.get("/prompts/qa?v=production").text
    assert '<h2>qa@1 <span class="tag">production</span></h2>' in first
    assert "Answer: {{ question }}" in first and "You are careful." not in first


def test_the_diff_colours_added_and_removed_lines(prompt_client: TestClient):
    page = prompt_client.get("/prompts/qa?a=1&b=2")
    assert page.status_code == 200
    lines = re.findall(r'<span class="(\w+)">([^<]*)</span>', page.text.split('class="diff"')[1])
    assert ("file", "--- qa@1") in lines and ("file", "+++ qa@2") in lines
    assert ("del", "-Answer: {{ question }}") in lines
    assert ("add", "+[system] You are careful.") in lines
    assert ("add", "+&lt;script&gt;alert(&#39;doc&#39;)&lt;/script&gt;") in lines
    assert any(kind == "hunk" for kind, _ in lines)
    same = prompt_client.get("/prompts/qa?a=2&b=2").text
    assert "qa@2 and qa@2 are identical." in same


def test_prompt_errors_name_the_parameter_or_the_prompt(prompt_client: TestClient):
    page = prompt_client.get("/prompts/qa?v=9&a=staging&b=1")
    assert page.status_code == 400
    assert flashes(page.text) == [
        "v: prompt &#39;qa&#39; has no version 9 (versions 1-2)",
        "a: prompt &#39;qa&#39; has no tag &#39;staging&#39; (tags: production)",
    ]
    assert "<h2>qa@2</h2>" in page.text  # the rest of the page still works
    missing = prompt_client.get("/prompts/nope")
    assert missing.status_code == 404
    assert "no prompt named &#39;nope&#39; (prompts: greet, qa)" in missing.text


def test_empty_lists_say_how_to_start(client_without_data: TestClient):
    for url, hint in (
        ("/data", "slmops data ingest PATH --corpus NAME"),
        ("/prompts", "slmops prompt add NAME FILE"),
        ("/stacks", "slmops init NAME --template rag"),
    ):
        page = client_without_data.get(url)
        assert page.status_code == 200 and hint in page.text, url


@pytest.fixture
def client_without_data(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.chdir(tmp_path)
    with TestClient(create_console(workspace), base_url="http://127.0.0.1") as client:
        yield client
