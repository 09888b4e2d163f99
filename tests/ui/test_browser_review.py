"""The review queue and the Models pages in a real browser (Debian's Chromium through
Playwright, as tests/ui/test_browser.py): review a trace good, correct the next one, see the
correction on its trace page; open a model and its card. With SLMOPS_SCREENSHOTS=1 the
review page is saved as docs/images/console-review.png."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slmops.registry.registration import register_uri
from slmops.registry.store import ModelRegistry
from slmops.store import Workspace
from slmops.ui.server import running_console
from tests.ui.data import STACK, ConsoleData, build

pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
from tests.ui.test_browser import (  # fixtures shared with the other browser tests
    CHROMIUM,
    README_SHOTS,
    browser,
    page,
    shoot,
)

__all__ = ["browser", "page"]  # fixtures, used by name
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)
CARD_SCRIPT = "<script>alert('card')</script>"


@pytest.fixture(scope="module")
def review_site(
    tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path, tiny_gguf: Path
) -> Iterator[dict[str, Any]]:
    """The console over traces (as the other browser tests have them) and a registered model
    whose card holds markup (with SLMOPS_SCREENSHOTS=1 the handbook is ingested too, so the
    sources show their text)."""
    with Workspace.open(tmp_path_factory.mktemp("review-console") / "ws") as workspace:
        chunk_ids: tuple[str, ...] = ("c1", "c2")
        if README_SHOTS:
            from slmops.apps.quickstart import bundled_docs
            from slmops.data.corpus import corpora_for

            corpora = corpora_for(workspace)
            corpora.ingest("docs", [bundled_docs()])
            rows = corpora.vector_index(corpora.resolve("docs@1")).rows
            chunk_ids = tuple(str(row["chunk_id"]) for row in rows[3:5])
        data = build(workspace.engine, count=12, chunk_ids=chunk_ids)
        shutil.copy(mlflow_template, workspace.home / "mlflow.db")
        registry = ModelRegistry(workspace)
        version = register_uri(
            registry, name="tiny", uri=f"gguf:{tiny_gguf}", intended_use="browser tests"
        )
        registry.set_card(version, version.card + f"\n## Notes\n\n{CARD_SCRIPT}\n")
        with running_console(workspace) as url:
            yield {"url": url, "data": data, "workspace": workspace}


def progress(page: Any) -> str:
    return str(page.locator("#progress strong").inner_text())


def current(page: Any) -> str:
    action = str(page.locator("form.review-form").get_attribute("action"))
    found = re.search(r"/([0-9a-f]{32})\?", action)
    assert found is not None, action
    return found.group(1)


def test_review_good_then_a_correction_that_shows_on_the_trace(
    review_site: dict[str, Any], page: Any, tmp_path: Path
):
    data: ConsoleData = review_site["data"]
    assert data.stack_ids
    page.goto(f"{review_site['url']}/review")
    page.get_by_role("link", name=STACK, exact=True).click()
    page.wait_for_url(re.compile(f"/review/{STACK}$"))
    page.fill("input[name=sample]", "3")
    page.get_by_role("button", name="Sample").click()
    page.wait_for_url(re.compile(r"sample=3"))
    assert progress(page) == "0 reviewed, 3 left"
    first = current(page)
    assert page.locator(".exchange-box .text").first.is_visible()

    page.get_by_role("button", name="✓ Good").click()
    page.wait_for_url(re.compile(r"saved=\d+"))
    assert progress(page) == "1 reviewed, 2 left"
    second = current(page)
    assert second != first
    page.fill("textarea[name=correction]", "Run slmops init, then slmops run.")
    page.fill("input[name=labels]", "incomplete")
    page.locator("h1").scroll_into_view_if_needed()
    shoot(page, tmp_path, "console-review", full=True)
    page.get_by_role("button", name="Correct").click()
    page.wait_for_url(re.compile(f"after={second}"))
    assert progress(page) == "2 reviewed, 1 left"

    page.locator(".flash.ok a.mono").click()  # "Review #N recorded for <trace>"
    page.wait_for_url(re.compile(f"/traces/{second}"))
    row = page.locator("#feedback tbody tr").last
    assert "Run slmops init, then slmops run." in row.locator(".correction").inner_text()
    assert "reviewer" in row.inner_text() and "#incomplete" in row.inner_text()
    page.goto(f"{review_site['url']}/review/{STACK}?sample=3")  # resumable: the one left
    assert progress(page) == "2 reviewed, 1 left"
    assert current(page) not in (first, second)
    assert page.dialogs == []


def test_models_a_model_and_its_card(review_site: dict[str, Any], page: Any, tmp_path: Path):
    page.goto(f"{review_site['url']}/")
    page.get_by_role("link", name="Models", exact=True).click()
    page.wait_for_url(re.compile(r"/models$"))
    page.get_by_role("link", name="tiny", exact=True).click()
    page.wait_for_url(re.compile(r"/models/tiny$"))
    assert page.locator("table.versions-table tbody tr").count() == 1
    page.get_by_role("link", name="tiny@1").click()
    page.wait_for_url(re.compile(r"/models/tiny/1$"))
    card = page.locator(".model-card")
    assert card.locator("h1").inner_text() == "tiny version 1"
    assert "browser tests" in card.inner_text()
    assert CARD_SCRIPT in card.inner_text()  # shown as text, never run
    page.wait_for_timeout(300)
    assert page.dialogs == []
    shoot(page, tmp_path, "model-card", full=True)
