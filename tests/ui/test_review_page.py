"""The review queue in the browser (``/review/{stack}``) through the ASGI app: the same sample
as ``slmops review``, one trace at a time, reviews stored as reviewer feedback (redacted),
the browser sent on to the next trace, and the queue resumable."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from slmops.monitor.feedback import list_feedback
from slmops.monitor.review import review_queue
from slmops.store import Workspace
from slmops.ui import create_console
from tests.monitor.traces import make_trace
from tests.ui.conftest import KEY
from tests.ui.data import OTHER, SCRIPT_ANSWER, SCRIPT_QUESTION, STACK, ConsoleData


def current_trace(html: str) -> str | None:
    """The trace the page asks to review (its POST form's target), or None."""
    found = re.search(r'action="/review/[^/"]+/([0-9a-f]{32})\?', html)
    return found.group(1) if found else None


def progress(html: str) -> tuple[int, int]:
    found = re.search(r"<strong>(\d+) reviewed, (\d+) left</strong>", html)
    assert found is not None, html
    return int(found.group(1)), int(found.group(2))


def reviews(workspace: Workspace) -> list[dict]:
    return [row for row in list_feedback(workspace.engine) if row["source"] == "reviewer"]


def test_the_index_links_each_stack_s_queues(client: TestClient, data: ConsoleData):
    page = client.get("/review")
    assert page.status_code == 200
    for stack in (STACK, OTHER):
        assert f'href="/review/{stack}"' in page.text
    assert f'href="/review/{STACK}?worst_first=1"' in page.text
    assert 'href="/review" class="here"' in page.text  # the nav marks the page


def test_the_queue_is_the_cli_s_sample_one_trace_at_a_time(
    client: TestClient, workspace: Workspace, data: ConsoleData
):
    expected = review_queue(workspace.engine, STACK, sample=5, seed=3)
    page = client.get(f"/review/{STACK}?sample=5&seed=3")
    assert page.status_code == 200
    assert progress(page.text) == (0, 5)
    assert current_trace(page.text) == expected[0]
    assert f'href="/traces/{expected[0]}"' in page.text  # to the whole trace
    for button in ("✓ Good", "✗ Bad", "Correct", "Label", "Skip"):
        assert button in page.text
    assert "support <strong>0.90</strong>" in page.text
    worst = review_queue(workspace.engine, STACK, sample=3, order="worst", max_relevance=0.5)
    shown = client.get(f"/review/{STACK}?sample=3&worst_first=1&max_relevance=0.5").text
    assert current_trace(shown) == worst[0]
    refusals = client.get(f"/review/{STACK}?sample=50&refused=1").text
    assert progress(refusals)[1] == len(
        review_queue(workspace.engine, STACK, sample=50, refused=True)
    )


def test_good_then_a_correction_then_labels_each_move_to_the_next(
    client: TestClient, workspace: Workspace, data: ConsoleData
):
    queue = review_queue(workspace.engine, STACK, sample=4)
    url = f"/review/{STACK}?sample=4"
    good = client.post(f"/review/{STACK}/{queue[0]}?sample=4", data={"action": "good"})
    assert good.status_code == 200  # followed the redirect
    assert good.history[0].status_code == 303
    assert f"after={queue[0]}" in str(good.url) and "saved=" in str(good.url)
    assert progress(good.text) == (1, 3)
    assert current_trace(good.text) == queue[1]
    assert re.search(r"Review #\d+ recorded for", good.text)

    empty = client.post(f"/review/{STACK}/{queue[1]}?sample=4", data={"action": "correct"})
    assert empty.status_code == 400
    assert "write the corrected answer before pressing Correct" in empty.text
    assert current_trace(empty.text) == queue[1]  # the same trace again
    fixed = client.post(
        f"/review/{STACK}/{queue[1]}?sample=4",
        data={"action": "correct", "correction": "Run slmops init.", "labels": "wrong-answer"},
    )
    assert progress(fixed.text) == (2, 2) and current_trace(fixed.text) == queue[2]

    bad_labels = client.post(
        f"/review/{STACK}/{queue[2]}?sample=4", data={"action": "label", "labels": "no spaces!"}
    )
    assert bad_labels.status_code == 400 and "invalid labels" in bad_labels.text
    assert 'value="no spaces!"' in bad_labels.text  # what was typed is kept
    labelled = client.post(
        f"/review/{STACK}/{queue[2]}?sample=4", data={"action": "label", "labels": "too-long"}
    )
    assert current_trace(labelled.text) == queue[3]

    stored = {row["trace_id"]: row for row in reviews(workspace)}
    assert stored[queue[0]]["raw_score"] == 1
    assert stored[queue[1]]["raw_score"] == 0
    assert stored[queue[1]]["correction"] == "Run slmops init."
    assert stored[queue[1]]["labels"] == ["wrong-answer"]
    assert stored[queue[2]]["raw_score"] is None and stored[queue[2]]["labels"] == ["too-long"]

    resumed = client.get(url).text  # reviewed traces have left the queue
    assert progress(resumed) == (3, 1) and current_trace(resumed) == queue[3]
    client.post(f"/review/{STACK}/{queue[3]}?sample=4", data={"action": "bad"})
    done = client.get(url).text
    assert progress(done) == (4, 0) and current_trace(done) is None
    assert "All 4 sampled traces are reviewed" in done
    assert f'href="/review/{STACK}?sample=8"' in done


def test_skip_moves_on_without_storing_and_the_end_offers_to_start_over(
    client: TestClient, workspace: Workspace, data: ConsoleData
):
    queue = review_queue(workspace.engine, STACK, sample=2)
    first = client.get(f"/review/{STACK}?sample=2").text
    skip = re.search(r'href="(/review/[^"]+after=[0-9a-f]{32})#review">Skip', first)
    assert skip is not None
    second = client.get(skip.group(1).replace("&amp;", "&")).text
    assert current_trace(second) == queue[1]
    end = client.get(f"/review/{STACK}?sample=2&after={queue[1]}").text
    assert current_trace(end) is None
    assert "End of the sample: 2 skipped traces are still to review" in end
    assert reviews(workspace) == []


def test_a_reviewer_s_queue_leaves_out_only_their_reviews(
    client: TestClient, workspace: Workspace, data: ConsoleData
):
    queue = review_queue(workspace.engine, STACK, sample=3)
    client.post(f"/review/{STACK}/{queue[0]}?sample=3&reviewer=ana", data={"action": "good"})
    [stored] = reviews(workspace)
    assert stored["author"] == "ana"
    assert progress(client.get(f"/review/{STACK}?sample=3&reviewer=ana").text) == (1, 2)
    assert progress(client.get(f"/review/{STACK}?sample=3&reviewer=bo").text) == (0, 3)
    mine = client.get(f"/review/{STACK}?sample=3&reviewer=ana").text
    assert f"/review/{STACK}/{queue[1]}?sample=3&amp;reviewer=ana" in mine  # kept in the POST


def test_bad_queries_are_400_naming_the_parameter_and_unknown_names_404(
    client: TestClient, data: ConsoleData
):
    for query, named in [
        ("sample=0", "sample: sample must be from 1 to 1000"),
        ("sample=many", "sample: &#39;many&#39; is not a whole number"),
        ("since=yesterday", "since: bad duration"),
        ("feedback=angry", "feedback: unknown feedback kind(s) angry"),
        ("max_support=high", "max_support: &#39;high&#39; is not a number"),
        ("refused=maybe", "refused: refused must be 1"),
    ]:
        page = client.get(f"/review/{STACK}?{query}")
        assert page.status_code == 400, query
        assert named in page.text, (query, page.text)
        assert current_trace(page.text) is None
    assert client.get("/review/no-such-stack").status_code == 404
    assert "no stack &#39;no-such-stack&#39;" in client.get("/review/no-such-stack").text
    post = client.post(f"/review/{STACK}/0123456789abcdef0123456789abcdef", data={"action": "good"})
    assert post.status_code == 404
    other = client.post(f"/review/{STACK}/{data.other_ids[0]}", data={"action": "good"})
    assert other.status_code == 404  # a trace of another stack
    unknown = client.post(f"/review/{STACK}/{data.stack_ids[1]}", data={"action": "maybe"})
    assert unknown.status_code == 400 and "choose one of good, bad, correct, label" in unknown.text


def test_markup_in_a_trace_under_review_is_text(client: TestClient, data: ConsoleData):
    page = client.get(f"/review/{OTHER}?since=1m").text
    assert current_trace(page) == data.script_id
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert SCRIPT_QUESTION not in page and SCRIPT_ANSWER not in page


def test_corrections_are_redacted_like_the_cli_does(tmp_path: Path):
    home = tmp_path / "redacting"
    home.mkdir()
    (home / "config.toml").write_text('redact = ["email"]\n')
    with Workspace.open(home) as workspace:
        trace_id = make_trace(workspace.engine, stack=STACK)
        with TestClient(create_console(workspace), base_url="http://127.0.0.1") as client:
            client.post(
                f"/review/{STACK}/{trace_id}",
                data={"action": "correct", "correction": "write to ana@example.com"},
            )
        [stored] = list_feedback(workspace.engine)
    assert stored["correction"] == "write to [REDACTED:email]"
    assert stored["source"] == "reviewer"


def test_with_a_key_reviews_need_it(keyed_client: TestClient, data: ConsoleData):
    assert keyed_client.get(f"/review/{STACK}", follow_redirects=False).status_code == 303
    trace_id = data.stack_ids[1]
    refused = keyed_client.post(f"/review/{STACK}/{trace_id}", data={"action": "good"})
    assert refused.status_code == 401
    headers = {"Authorization": f"Bearer {KEY}"}
    cross_site = keyed_client.post(
        f"/review/{STACK}/{trace_id}",
        data={"action": "good"},
        headers={**headers, "Origin": "https://elsewhere.example"},
    )
    assert cross_site.status_code == 403
    stored = keyed_client.post(
        f"/review/{STACK}/{trace_id}", data={"action": "good"}, headers=headers
    )
    assert stored.status_code == 200 and re.search(r"Review #\d+ recorded", stored.text)
