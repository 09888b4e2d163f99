"""The eval pages in a real browser (Debian's headless Chromium through Playwright, as in
test_browser): the run list, a run, a case's trace and back, and the comparison of two runs.
With SLMOPS_SCREENSHOTS=1 the comparison is saved as docs/images/console-eval-compare.png."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slmops.store import Workspace
from slmops.ui.server import running_console
from tests.ui.test_browser import CHROMIUM, browser, page, shoot
from tests.ui.test_eval_pages import STACK, EvalData, build_eval_runs

__all__ = ["browser", "page"]  # the browser fixtures, shared with test_browser
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def eval_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The console over a workspace holding two finished eval runs and a started one."""
    home = tmp_path_factory.mktemp("eval-console")
    with Workspace.open(home / "ws") as workspace:
        data = build_eval_runs(workspace, home / "stacks")
        with running_console(workspace) as url:
            yield {"url": url, "data": data}


def test_click_from_the_runs_to_a_case_trace_and_back_then_compare_two_runs(
    eval_site: dict[str, Any], page: Any, tmp_path: Path
):
    data: EvalData = eval_site["data"]
    page.goto(eval_site["url"] + "/")
    page.get_by_role("link", name="Eval", exact=True).click()
    page.wait_for_url(re.compile(r"/eval$"))
    assert page.locator("table.eval-runs tbody tr").count() == 3
    shoot(page, tmp_path, "eval-runs")

    page.get_by_role("link", name=data.a[:12]).click()
    page.wait_for_url(re.compile(f"/eval/runs/{data.a}$"))
    assert page.locator("h1").inner_text() == f"Eval run {data.a[:12]}: {STACK} on qa@1"
    rows = page.locator("table.eval-cases tbody tr")
    assert rows.count() == 6
    assert rows.first.locator("td").first.inner_text() == "c"  # the error first
    assert page.locator("figure.eval-hist svg rect").count() == 30
    assert page.locator("figure.eval-hist").first.is_visible()
    assert page.locator("table.eval-cases img, table.eval-cases script").count() == 0
    shoot(page, tmp_path, "eval-run", full=True)

    delta = page.locator("table.eval-cases tbody tr", has_text="DELTA")
    delta.get_by_role("link").click()
    page.wait_for_url(re.compile(f"/traces/{data.traces[data.a]['d']}$"))
    assert page.locator(".exchange-box .text").first.inner_text() == "delta"
    assert page.locator(".exchange-box .text").nth(1).inner_text() == "wrong"
    page.go_back()
    page.wait_for_url(re.compile(f"/eval/runs/{data.a}$"))

    page.select_option("select[name=sort]", "latency")
    page.get_by_role("button", name="Sort").click()
    page.wait_for_url(re.compile(r"sort=latency"))
    assert page.locator("select[name=sort]").input_value() == "latency"

    page.get_by_role("link", name="Eval runs").click()
    page.wait_for_url(re.compile(r"/eval$"))
    page.get_by_label(f"A: {data.a[:12]}").check()
    page.get_by_label(f"B: {data.b[:12]}").check()
    page.get_by_role("button", name="Compare A → B").click()
    page.wait_for_url(re.compile(r"/eval/compare\?"))
    assert sorted(page.url.split("?")[1].split("&")) == [f"a={data.a}", f"b={data.b}"]
    exact = page.locator("table.eval-deltas tbody tr", has_text="exact_match")
    assert exact.locator("td").nth(3).inner_text() == "-0.200"
    assert page.locator("table.eval-flips tbody tr").count() == 6
    assert (
        page.locator("ul.eval-changes li")
        .first.inner_text()
        .startswith("stack version (manifest or code): ")
    )
    flipped = page.locator("table.eval-flips tbody tr").first
    assert flipped.get_by_role("link").count() == 2  # the case's trace in A and in B
    page.wait_for_timeout(300)  # markup in an answer had its chance to run: it must not
    assert page.dialogs == []
    assert page.locator("table.eval-flips img").count() == 0
    shoot(page, tmp_path, "console-eval-compare", full=True)

    flipped.get_by_role("link").nth(1).click()
    page.wait_for_url(re.compile(f"/traces/{data.traces[data.b]['b']}$"))
    assert page.locator(".exchange-box .text").nth(1).inner_text() == "ateb"
