"""Every console page through the ASGI app: what a user sees on it, filters, pagination,
escaping, errors."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from slmops.store import Workspace
from slmops.ui import create_console
from tests.ui.data import OTHER, SCRIPT_ANSWER, SCRIPT_QUESTION, STACK, ConsoleData


def trace_links(html: str) -> list[str]:
    """The trace ids the page's rows link to, in order."""
    return re.findall(r'href="[^"]*/traces/([0-9a-f]{32})"', html)


def test_home_counts_traces_stacks_and_firing_alerts(client: TestClient, data: ConsoleData):
    page = client.get("/")
    assert page.status_code == 200
    text = page.text
    assert re.search(r'class="figure">67</span> traces stored', text)
    assert re.search(r'class="figure">2</span> stacks with traffic', text)
    assert re.search(r'class="figure">1</span> firing alerts of 2 rules', text)
    assert "error_rate &gt; 0.05" in text
    for target in ('href="/traces"', 'href="/monitor"', f'href="/monitor/{STACK}"'):
        assert target in text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


def test_trace_list_is_newest_first_and_pages_by_keyset(client: TestClient, data: ConsoleData):
    first = client.get("/traces")
    assert first.status_code == 200
    shown = trace_links(first.text)
    assert len(shown) == 50
    assert shown[0] == data.script_id  # the newest
    older = re.search(r'href="/traces\?older=([^"]+)" rel="next"', first.text)
    assert older is not None
    second = client.get(f"/traces?older={older.group(1)}")
    rest = trace_links(second.text)
    assert len(rest) == 67 - 50 and not set(rest) & set(shown)
    assert 'rel="next"' not in second.text  # the last page
    newer = re.search(r'href="/traces\?newer=([^"]+)" rel="prev"', second.text)
    assert newer is not None
    assert trace_links(client.get(f"/traces?newer={newer.group(1)}").text) == shown


def test_trace_list_filters(client: TestClient, data: ConsoleData):
    def ids(query: str) -> set[str]:
        page = client.get(f"/traces?{query}")
        assert page.status_code == 200, page.text
        return set(trace_links(page.text))

    assert ids("status=error") == set(data.errors)
    assert ids(f"stack={OTHER}") == {*data.other_ids, data.script_id}
    assert ids("min_ms=5000") == {data.slow_id}
    assert ids("feedback=negative") == {data.negative_id}
    assert ids("feedback=rated") == {data.negative_id, data.positive_id}
    assert ids("model=support-model") == set(data.other_ids)
    # STACK's traces started 0.5, 1 and 21 minutes ago are in the last 30 minutes
    assert ids(f"last=30m&stack={STACK}") == {data.slow_id, *data.stack_ids[1:3]}
    assert len(ids("last=1h")) == 10
    assert ids("status=error&min_ms=1200") == {
        t for t in data.errors if 300 + (data.stack_ids.index(t) - 1) % 10 * 150 >= 1200
    }
    # a filter kept in the pager's links
    page = client.get("/traces?stack=handbook-rag&status=ok")
    assert "stack=handbook-rag&amp;status=ok&amp;older=" in page.text


def test_trace_list_names_a_filter_it_cannot_use(client: TestClient, data: ConsoleData):
    page = client.get("/traces?min_ms=fast&last=yesterday&status=maybe")
    assert page.status_code == 400
    assert "min_ms: min latency must be a number of milliseconds (ignored)" in page.text
    assert "last: last must be a duration such as 30m, 24h or 7d (ignored)" in page.text
    assert "status: status must be one of ok, error (ignored)" in page.text
    assert len(trace_links(page.text)) == 50  # the rest of the page still works


def test_trace_page_shows_waterfall_io_tokens_passages_versions_and_feedback(
    client: TestClient, data: ConsoleData
):
    page = client.get(f"/traces/{data.negative_id}")
    assert page.status_code == 200
    text = page.text
    assert len(re.findall(r'<details class="span-row">', text)) == 4
    assert len(re.findall(r'class="bar ok kind-(stack|retrieval|llm|cite)"', text)) == 4
    assert "How do I do task 4?" in text and "Answer 4: run slmops." in text
    assert "tokens 100 in / 20 out" in text and "100/20 tok" in text
    assert "handbook.md:1" in text and "handbook.md:2" in text  # the passages' sources
    assert "text unavailable for corpus docs@1" in text  # no such corpus in this workspace
    assert "docs = docs@1" in text and "answer = local:smollm2-135m" in text
    assert "cites the wrong file" in text and "✗ bad" in text
    assert 'action="/traces/' + data.negative_id + '/feedback"' in text


def test_a_trace_prefix_opens_the_trace_and_an_unknown_one_is_404(
    client: TestClient, data: ConsoleData
):
    assert client.get(f"/traces/{data.slow_id[:10]}").status_code == 200
    missing = client.get("/traces/0123456789abcdef")
    assert missing.status_code == 404
    assert "no trace with id" in missing.text
    assert client.get("/traces/abc").status_code == 404  # too short to be a prefix
    assert client.get("/no-such-page").status_code == 404


def test_markup_in_questions_and_answers_is_shown_as_text(client: TestClient, data: ConsoleData):
    for url in (f"/traces/{data.script_id}", f"/traces?stack={OTHER}", "/"):
        text = client.get(url).text
        assert "<script>alert" not in text and "<img src=x" not in text
    page = client.get(f"/traces/{data.script_id}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert SCRIPT_QUESTION and SCRIPT_ANSWER  # stored as given; only the page escapes them


def test_monitor_overview_lists_stacks_with_figures_and_rule_states(
    client: TestClient, data: ConsoleData
):
    page = client.get("/monitor")
    assert page.status_code == 200
    assert f'href="/monitor/{STACK}"' in page.text and f'href="/monitor/{OTHER}"' in page.text
    assert re.search(r'<td class="num">61</td>', page.text)  # requests of the last 24h
    assert 'class="state firing"' in page.text and 'class="state ok"' in page.text


def test_stack_monitor_draws_a_chart_per_figure_group(client: TestClient, data: ConsoleData):
    page = client.get(f"/monitor/{STACK}?window=1h&last=24h")
    assert page.status_code == 200
    text = page.text
    titles = re.findall(r"<figcaption>([^<]+)", text)
    assert [t.strip() for t in titles] == [
        "Requests",
        "Error and refusal rate",
        "Latency",
        "Tokens per request",
        "Low relevance share",
        "Online scores",
        "Feedback positive rate",
    ]
    assert text.count("<svg") == 7 and text.count("<polyline") >= 6
    assert "no data in this range" in text  # no online scores were stored
    assert "error_rate &gt; 0.05" in text and "firing" in text  # the rule and its event
    assert "Compute drift" in text and "drift=1" in text  # drift is off until asked for
    assert "61 requests" in text


def test_stack_monitor_refuses_a_bad_range(client: TestClient, data: ConsoleData):
    for query, message in (
        ("window=0s", "must be longer than 0s"),
        ("window=1h&last=30m", "is shorter than one window"),
        ("window=1m&last=7d", "over 200 windows"),
        ("window=soon", "bad duration"),
    ):
        page = client.get(f"/monitor/{STACK}?{query}")
        assert page.status_code == 400 and message in page.text, query


def test_console_mounted_beside_the_api_links_within_its_prefix(
    workspace: Workspace, data: ConsoleData
):
    """As 'slmops serve --ui' mounts it: every link and form stays under /ui."""
    app = FastAPI()
    app.mount("/ui", create_console(workspace))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        home = client.get("/ui/")
        assert home.status_code == 200
        assert 'href="/ui/traces"' in home.text and 'href="/ui/static/console.css"' in home.text
        trace = client.get(f"/ui/traces/{data.negative_id}").text
        assert f'action="/ui/traces/{data.negative_id}/feedback"' in trace
        assert client.get("/ui/static/console.css").status_code == 200
        posted = client.post(
            f"/ui/traces/{data.negative_id}/feedback",
            data={"rating": "up"},
            follow_redirects=False,
        )
        assert posted.headers["location"].startswith(f"/ui/traces/{data.negative_id}?saved=")
