"""The console in a real browser: Debian's headless Chromium driven by Playwright, against
the console served by uvicorn on a loopback port. Screenshots go to the test's folder, and
to docs/images/ when SLMOPS_SCREENSHOTS=1 (the README shows those)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slmops.store import Workspace
from slmops.ui.server import running_console
from tests.ui.conftest import KEY
from tests.ui.data import OTHER, SCRIPT_ANSWER, SCRIPT_QUESTION, STACK, ConsoleData, build

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
README_SHOTS = os.environ.get("SLMOPS_SCREENSHOTS") == "1"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The console over a workspace of traces, feedback and alerts (with SLMOPS_SCREENSHOTS=1
    the bundled handbook is ingested too, so the passages show their text: it loads the
    embedder)."""
    with Workspace.open(tmp_path_factory.mktemp("console") / "ws") as workspace:
        chunk_ids: tuple[str, ...] = ("c1", "c2")
        if README_SHOTS:
            from slmops.apps.quickstart import bundled_docs
            from slmops.data.corpus import corpora_for

            corpora = corpora_for(workspace)
            corpora.ingest("docs", [bundled_docs()])
            rows = corpora.vector_index(corpora.resolve("docs@1")).rows
            chunk_ids = tuple(str(row["chunk_id"]) for row in rows[3:6])
        data = build(workspace.engine, chunk_ids=chunk_ids)
        with running_console(workspace) as url:
            yield {"url": url, "data": data, "workspace": workspace}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    dialogs: list[str] = []
    opened.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    opened.dialogs = dialogs
    yield opened
    context.close()


def shoot(page: Any, tmp_path: Path, name: str, *, full: bool = False) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    if README_SHOTS and name.startswith("console-"):
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / path.name)
    assert path.stat().st_size > 10_000  # a real picture, not a blank page
    return path


def test_click_through_traces_a_trace_feedback_and_the_monitor(
    site: dict[str, Any], page: Any, tmp_path: Path
):
    data: ConsoleData = site["data"]
    page.goto(site["url"] + "/")
    assert page.locator(".card").first.inner_text().startswith("67")
    shoot(page, tmp_path, "home")

    page.get_by_role("link", name="Traces", exact=True).click()
    page.wait_for_url(re.compile(r"/traces$"))
    assert page.locator("table.traces tbody tr").count() == 50
    shoot(page, tmp_path, "console-traces")

    page.select_option("select[name=status]", "error")
    page.select_option("select[name=stack]", STACK)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"status=error"))
    statuses = page.locator("table.traces tbody .status").all_inner_texts()
    assert statuses == ["error"] * len(data.errors)

    page.goto(site["url"] + "/traces?feedback=negative")
    page.locator("table.traces tbody a.mono").first.click()
    page.wait_for_url(re.compile(data.negative_id))
    bars = page.locator(".waterfall .bar")
    assert bars.count() == 4 and all(bars.nth(i).is_visible() for i in range(4))
    assert page.locator("ol.passages li").count() >= 2
    assert page.locator("ol.passages li").first.is_visible()
    page.locator(".span-row summary").nth(2).click()  # open the model call
    assert page.get_by_text("Answer from the passages.", exact=False).first.is_visible()

    page.check("input[name=rating][value=down]")
    page.fill("textarea[name=comment]", "The second passage is about something else")
    page.fill("input[name=labels]", "wrong-source")
    page.get_by_role("button", name="Record feedback").click()
    page.wait_for_url(re.compile(r"saved=\d+"))
    assert re.fullmatch(r"Feedback #\d+ recorded\.", page.locator(".flash.ok").inner_text())
    assert page.get_by_text("The second passage is about something else").is_visible()
    page.locator(".span-row summary").nth(2).click()
    page.locator("h1").scroll_into_view_if_needed()
    shoot(page, tmp_path, "console-trace", full=True)

    page.get_by_role("link", name="Monitor", exact=True).click()
    page.get_by_role("link", name=STACK).click()
    page.wait_for_url(re.compile(f"/monitor/{STACK}"))
    assert page.locator("figure.chart svg").count() == 7
    assert page.locator("figure.chart svg polyline").count() >= 6
    assert page.locator(".state.firing").first.is_visible()
    shoot(page, tmp_path, "console-monitor", full=True)
    assert page.dialogs == []


def test_markup_in_a_stored_answer_is_shown_as_text_and_never_runs(
    site: dict[str, Any], page: Any, tmp_path: Path
):
    data: ConsoleData = site["data"]
    page.goto(f"{site['url']}/traces/{data.script_id}")
    assert page.locator(".exchange-box .text").first.inner_text() == SCRIPT_QUESTION
    assert page.locator(".exchange-box .text").nth(1).inner_text() == SCRIPT_ANSWER
    page.goto(f"{site['url']}/traces?stack={OTHER}")
    assert page.get_by_text(SCRIPT_QUESTION).first.is_visible()
    page.wait_for_timeout(300)  # a handler that would fire has had its chance
    assert page.dialogs == []
    assert page.locator("img").count() == 0
    shoot(page, tmp_path, "escaping")


def test_with_a_key_the_browser_logs_in_and_labels_as_a_reviewer(site: dict[str, Any], page: Any):
    data: ConsoleData = site["data"]
    with running_console(site["workspace"], api_keys=[KEY]) as url:
        page.goto(f"{url}/traces/{data.slow_id}")
        page.wait_for_url(re.compile(r"/login\?next="))
        page.fill("input[name=key]", "wrong key")
        page.get_by_role("button", name="Log in").click()
        assert "not this console's API key" in page.locator(".flash.error").inner_text()
        page.fill("input[name=key]", KEY)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(f"/traces/{data.slow_id}$"))
        assert page.locator("select[name=source]").input_value() == "reviewer"
        page.fill("input[name=labels]", "slow")
        page.get_by_role("button", name="Record feedback").click()
        page.wait_for_url(re.compile(r"saved=\d+"))
        row = page.locator("#feedback tbody tr").last.inner_text()
        assert "reviewer" in row and "#slow" in row
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(re.compile(r"/login"))
