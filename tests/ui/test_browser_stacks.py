"""The stack, data and prompt pages in a real browser (Debian's Chromium through Playwright,
as in test_browser.py): a stack's graph, a playground run whose answer streams in with its
sources and trace, a corpus search and a prompt diff. With SLMOPS_SCREENSHOTS=1 the
playground's screenshot goes to docs/images/console-playground.png."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slmops.apps.quickstart import bundled_docs
from slmops.apps.templates import ensure_workspace_stack
from slmops.data.corpus import corpora_for
from slmops.prompts.registry import PromptRegistry
from slmops.store import Workspace
from slmops.ui.server import running_console
from tests.ui import test_browser
from tests.ui.test_browser import CHROMIUM, shoot

browser, page = test_browser.browser, test_browser.page  # the browser test's fixtures
expect = test_browser.sync_api.expect

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
    ),
    pytest.mark.model,  # the handbook is embedded and the shipped chat model answers
]
QUESTION = "How do I install slmops?"
# Records the answer's length each time the page changes it (Playwright's evaluate is not
# bound by the page's script policy).
WATCH_ANSWER = """() => {
  window.answerLengths = [];
  const answer = document.getElementById('run-answer');
  new MutationObserver(() => window.answerLengths.push(answer.textContent.length))
    .observe(answer, {childList: true, characterData: true, subtree: true});
}"""


@pytest.fixture(scope="module")
def stack_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The console over a workspace holding the bundled handbook as corpus 'docs' and the rag
    stack 'handbook' on it."""
    root = tmp_path_factory.mktemp("console-stacks")
    with Workspace.open(root / "ws") as workspace, pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # no stacks in the current directory
        corpora_for(workspace).ingest("docs", [bundled_docs()])
        ensure_workspace_stack("handbook", "rag", workspace, answer="generative")
        with running_console(workspace) as url:
            yield {"url": url, "workspace": workspace}


def test_a_stack_its_playground_a_corpus_search_and_a_prompt_diff(
    stack_site: dict[str, Any], page: Any, tmp_path: Path
):
    page.goto(stack_site["url"] + "/")
    page.get_by_role("link", name="Stacks", exact=True).click()
    page.wait_for_url(re.compile(r"/stacks$"))
    page.get_by_role("link", name="handbook", exact=True).click()
    page.wait_for_url(re.compile(r"/stacks/handbook$"))
    graph = page.locator("p.graph img")
    graph.wait_for()
    page.wait_for_function("() => document.querySelector('p.graph img').naturalWidth > 100")
    assert graph.is_visible()
    assert "docs@1" in page.locator("dl.versions").inner_text()

    # the answer streams in: the page shows text before the run is done
    page.evaluate(WATCH_ANSWER)
    page.fill("textarea[name=input]", QUESTION)
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#playground-status")).to_have_text("done", timeout=120_000)
    assert page.locator("#run-answer").inner_text().strip()
    lengths = page.evaluate("window.answerLengths")
    assert len([n for n in lengths if n > 0]) >= 3  # it grew piece by piece, not at once
    refused = page.locator("#run-refused").is_visible()
    sources = page.locator("#run-sources li")
    assert refused or sources.count() >= 1
    if sources.count():
        assert ".md" in sources.first.locator(".source").inner_text()
    trace_link = page.locator("#run-trace a")
    assert re.fullmatch(r"[0-9a-f]{12}", trace_link.inner_text())
    page.evaluate("() => document.getElementById('playground-section').scrollIntoView()")
    shoot(page, tmp_path, "console-playground")
    trace_link.click()
    page.wait_for_url(re.compile(r"/traces/[0-9a-f]{32}$"))
    assert page.locator("h1").inner_text().startswith("handbook")
    assert QUESTION in page.locator(".exchange-box").inner_text()

    page.get_by_role("link", name="Data", exact=True).click()
    page.get_by_role("link", name="docs", exact=True).click()
    page.fill("input[name=q]", "install with pip")
    page.select_option("select[name=mode]", "hybrid")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"q=install"))
    hits = page.locator("ol.hits li")
    assert 1 <= hits.count() <= 5
    assert ".md" in hits.first.locator(".source").inner_text()
    shoot(page, tmp_path, "data-search")

    registry = PromptRegistry(stack_site["workspace"])  # a second version to compare
    first = registry.get("handbook-answer")
    registry.add(
        "handbook-answer",
        first.template.replace("Answer in one or two", "Answer in one short", 1),
        system=first.system,
        message="ask for brevity",
    )
    page.get_by_role("link", name="Prompts", exact=True).click()
    page.get_by_role("link", name="handbook-answer", exact=True).click()
    page.get_by_role("link", name="diff with 1").click()
    page.wait_for_url(re.compile(r"a=1&b=2"))
    assert page.locator("pre.diff .add").count() >= 1
    assert page.locator("pre.diff .del").count() >= 1
    assert "Answer in one short" in page.locator("pre.diff .add").first.inner_text()
    shoot(page, tmp_path, "prompt-diff")
    assert page.dialogs == []


def test_a_run_the_console_refuses_is_shown_as_an_error_on_the_same_page(
    stack_site: dict[str, Any], page: Any
):
    page.goto(stack_site["url"] + "/stacks/handbook")
    page.fill("textarea[name=input]", '{"question": ')  # JSON that does not parse
    page.get_by_role("button", name="Run").click()
    error = page.locator("#run-error")
    error.wait_for()
    assert "input looks like JSON but does not parse" in error.inner_text()
    assert page.url.endswith("/stacks/handbook")  # the script handled it; no page load
