"""The eval pages through the ASGI app, over real eval runs: a function stack (no model)
evaluated twice on the same dataset, its code edited between the runs so that cases flip, and
a third run that never got to its cases. What a user sees: figures, links, escaping, errors."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from slmops.apps.build import build_stack
from slmops.core.runtime import Runtime
from slmops.eval.datasets import Datasets, EvalCase
from slmops.eval.metrics import ExactMatch, TokenF1
from slmops.eval.runner import EvalRun, load_results, load_run
from slmops.store import Workspace
from slmops.ui import create_console
from tests.ui.conftest import KEY
from tests.ui.data import SCRIPT_ANSWER, SCRIPT_QUESTION

STACK = "qa-echo"
DATASET = "qa"
MANIFEST = f"""
[stack]
name = "{STACK}"
[[steps]]
name = "answer"
kind = "function"
call = "qa_steps:answer"
input = "input.text"
"""
CODE = """
import asyncio

ANSWERS = {answers!r}


async def answer(text: str) -> str:
    await asyncio.sleep(0.002)
    if text == "boom":
        raise RuntimeError("the case exploded")
    return ANSWERS.get(text, text.upper())
"""
# Run A gets delta wrong; run B fixes delta and breaks beta and gamma. The script case is
# answered with markup by both; boom is an error in both.
ANSWERS_A = {"delta": "wrong", SCRIPT_QUESTION: SCRIPT_ANSWER}
ANSWERS_B = {"beta": "ateb", "gamma": "ammag", SCRIPT_QUESTION: SCRIPT_ANSWER}


def eval_cases() -> list[EvalCase]:
    return [
        EvalCase(id="a", input="alpha", reference="ALPHA", tags=["vowel"]),
        EvalCase(id="b", input="beta", reference="BETA", tags=["consonant"]),
        EvalCase(id="c", input="boom", reference="BOOM", tags=["consonant"]),
        EvalCase(id="d", input="delta", reference="DELTA", tags=["consonant"]),
        EvalCase(id="e", input=SCRIPT_QUESTION, reference="<b>safe</b>", tags=["vowel"]),
        EvalCase(id="g", input="gamma", reference="GAMMA", tags=["consonant"]),
    ]


@dataclass
class EvalData:
    a: str = ""  # the baseline run: exact_match 3 of 5
    b: str = ""  # the edited stack: exact_match 2 of 5
    running: str = ""  # started, no case finished
    traces: dict[str, dict[str, str | None]] = field(default_factory=dict)  # run -> case -> id


def build_eval_runs(workspace: Workspace, folder: Path) -> EvalData:
    """Two finished runs of a function stack on dataset qa@1 (the stack's code edited between
    them) and a third run that was started and never ran a case."""
    stack_dir = folder / STACK
    stack_dir.mkdir(parents=True, exist_ok=True)
    (stack_dir / "slmops.toml").write_text(MANIFEST, encoding="utf-8")
    code = stack_dir / "qa_steps.py"
    cases = eval_cases()
    Datasets(workspace).add(DATASET, cases, message="six small questions")
    runtime = Runtime.from_workspace(workspace)
    data = EvalData()
    for answers in (ANSWERS_A, ANSWERS_B):
        code.write_text(CODE.format(answers=answers), encoding="utf-8")
        runner = EvalRun(
            workspace, build_stack(str(stack_dir), workspace), [ExactMatch(), TokenF1()]
        )
        run_id = runner.start(DATASET, 2)
        asyncio.run(runner.execute(run_id, cases, runtime, concurrency=2))
        data.traces[run_id] = {
            row["case_id"]: row["trace_id"] for row in load_results(workspace, run_id)
        }
        if not data.a:
            data.a = run_id
        else:
            data.b = run_id
    data.running = runner.start(DATASET, 1)
    return data


@pytest.fixture
def evals(workspace: Workspace, tmp_path: Path) -> EvalData:
    return build_eval_runs(workspace, tmp_path / "stacks")


@pytest.fixture
def client(workspace: Workspace, evals: EvalData) -> Iterator[TestClient]:
    with TestClient(create_console(workspace), base_url="http://127.0.0.1") as test_client:
        yield test_client


def run_links(html: str) -> list[str]:
    return re.findall(r'href="/eval/runs/([0-9a-f]{32})"', html)


def trace_links(html: str) -> list[str]:
    return re.findall(r'href="/traces/([0-9a-f]{32})"', html)


def cells(row_html: str) -> list[str]:
    """The text of a table row's cells, tags stripped."""
    found = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row_html, flags=re.S)
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", cell)).strip() for cell in found]


def row_of(html: str, marker: str) -> list[str]:
    """The cells of the first table row containing ``marker``."""
    for row in re.findall(r"<tr[^>]*>.*?</tr>", html, flags=re.S):
        if marker in row:
            return cells(row)
    raise AssertionError(f"no row with {marker!r}")


def test_run_list_is_newest_first_with_figures_and_a_compare_form(
    client: TestClient, evals: EvalData
):
    page = client.get("/eval")
    assert page.status_code == 200
    html = page.text
    assert run_links(html) == [evals.running, evals.b, evals.a]
    assert '<a href="/eval" class="here">Eval</a>' in html
    assert [h for h in ("exact_match", "token_f1") if f'<th class="num">{h}</th>' in html] == [
        "exact_match",
        "token_f1",
    ]
    row_a = row_of(html, f'value="{evals.a}"')
    assert row_a[2:8] == [evals.a[:12], STACK, "qa@1", "complete", row_a[6], "6 (1 err)"]
    assert row_a[8] == "0.600"  # exact_match: alpha, beta, gamma of the five that ran
    assert re.fullmatch(r"[\d.]+ ms", row_a[10]) and re.fullmatch(r"[\d.]+ ms", row_a[11])
    assert row_of(html, f'value="{evals.b}"')[8] == "0.400"
    running = row_of(html, f'value="{evals.running}"')
    assert running[5:8] == ["running", running[6], "-"]
    # the form picks the two newest finished runs: B against A
    assert re.search(rf'name="a" value="{evals.a}"[^>]*checked', html)
    assert re.search(rf'name="b" value="{evals.b}"[^>]*checked', html)
    assert 'action="/eval/compare"' in html and "Compare A → B" in html


def test_run_list_pages(client: TestClient, evals: EvalData):
    first = client.get("/eval?per_page=1")
    assert run_links(first.text) == [evals.running]
    assert 'href="/eval?page=2&amp;per_page=1" rel="next"' in first.text
    assert 'rel="prev"' not in first.text
    last = client.get("/eval?page=3&per_page=1")
    assert run_links(last.text) == [evals.a]
    assert 'rel="next"' not in last.text
    assert 'href="/eval?page=2&amp;per_page=1" rel="prev"' in last.text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=0", "page: 0 is not a page; pages are 1 to 1000"),
        ("page=9", "page: there is no page 9 of eval runs"),
        ("page=two", "page: Input should be a valid integer"),
        ("per_page=5000", "per_page: 5000 is not between 1 and 200"),
    ],
)
def test_run_list_names_a_bad_query(client: TestClient, query: str, message: str):
    page = client.get(f"/eval?{query}")
    assert page.status_code == 400
    assert message in page.text


def test_a_run_page_shows_config_versions_figures_tags_and_charts(
    client: TestClient, evals: EvalData, workspace: Workspace
):
    page = client.get(f"/eval/runs/{evals.a[:8]}")  # a prefix is enough, as in the CLI
    assert page.status_code == 200
    html = page.text
    assert f'Eval run <span class="mono">{evals.a[:12]}</span>: {STACK} on qa@1' in html
    assert "6 cases, 1 errors" in html
    assert "qa@1: 6 cases (file)" in html and "six small questions" in html
    assert '<span class="tag">exact_match</span>' in html
    assert row_of(html, "<td>exact_match</td>") == ["exact_match", "0.600", "5"]
    assert row_of(html, "<td>errors</td>")[:2] == ["errors", "1 of 6"]
    assert row_of(html, "<td>p95_latency_ms</td>")[0] == "p95_latency_ms"
    # by tag, as slmops eval run prints it: consonant beta, delta, gamma ran (boom failed)
    assert "<h3>By tag</h3>" in html
    tags = html.split("<h3>By tag</h3>")[1]
    assert row_of(tags, "<td>exact_match</td>") == ["exact_match", "0.667 (3)", "0.500 (2)"]
    # the report's distributions: one histogram per metric and latency, ten bars each
    assert html.count('<figure class="eval-hist">') == 3
    assert html.count("<rect ") == 30
    # the stack version it ran, and a form to compare it with another run
    version = load_run(workspace, evals.a)["versions"]["stack"]
    assert f'<dt>stack version</dt><dd class="mono">{version}</dd>' in html
    assert "<dt>lock</dt><dd>off</dd>" in html
    assert 'name="b" value="' + evals.a + '"' in html
    assert f'<option value="{evals.b}">' in html


def test_cases_are_worst_first_and_link_to_their_traces(client: TestClient, evals: EvalData):
    html = client.get(f"/eval/runs/{evals.a}").text
    table = html.split('<table class="eval-cases">')[1]
    order = re.findall(r'<td class="mono small">(\w+)</td>', table)
    # the error, then the lowest mean of exact_match and token_f1: delta and the script case
    # (0), then alpha, beta and gamma (1)
    assert order == ["c", "d", "e", "a", "b", "g"]
    assert row_of(table, ">c</td>")[3] == (
        "error: StepExecutionError: step &#39;qa-echo/answer&#39;: RuntimeError: the case exploded"
    )
    traces = evals.traces[evals.a]
    assert trace_links(table) == [traces[case] for case in order if case != "c"]
    assert row_of(table, ">d</td>")[1:4] == ["delta consonant", "DELTA", "wrong"]
    # the linked trace is the case's trace
    trace = client.get(f"/traces/{traces['d']}")
    assert trace.status_code == 200 and "delta" in trace.text and STACK in trace.text
    # worst by latency: slowest first, the error still first
    by_latency = client.get(f"/eval/runs/{evals.a}?sort=latency").text
    assert re.findall(r'<td class="mono small">(\w+)</td>', by_latency)[0] == "c"
    assert '<option value="latency" selected>' in by_latency
    limited = client.get(f"/eval/runs/{evals.a}?sort=token_f1&limit=2").text
    assert re.findall(r'<td class="mono small">(\w+)</td>', limited) == ["c", "d"]
    assert "4 more cases" in limited and "sort=token_f1&amp;limit=6#cases" in limited


def test_markup_in_a_question_answer_or_reference_is_text(client: TestClient, evals: EvalData):
    for url in (f"/eval/runs/{evals.a}", f"/eval/compare?a={evals.a}&b={evals.b}"):
        html = client.get(url).text
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>safe" not in html
    html = client.get(f"/eval/runs/{evals.a}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;&lt;script&gt;alert(3)&lt;/script&gt; done" in html
    assert "&lt;b&gt;safe&lt;/b&gt;" in html


def test_a_run_that_never_finished_a_case(client: TestClient, evals: EvalData):
    html = client.get(f"/eval/runs/{evals.running}").text
    assert "0 cases, 0 errors" in html and "running" in html
    assert html.count("No case has finished yet.") == 2


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("/eval/runs/0123456789abcdef", 404, "no eval run with id &#39;0123456789abcdef&#39;"),
        ("/eval/runs/not-a-run", 404, "is not a run id"),
        ("/eval/runs/RUN?sort=bogus", 400, "sort: &#39;bogus&#39; is not one of mean, latency"),
        ("/eval/runs/RUN?limit=0", 400, "limit: 0 cases is not 1 or more"),
        ("/eval/compare", 400, "a: choose a run"),
        ("/eval/compare?a=RUN", 400, "b: choose a run"),
        ("/eval/compare?a=RUN&b=xyz", 400, "b: &#39;xyz&#39; is not a run id"),
        ("/eval/compare?a=RUN&b=abcdef0123", 404, "no eval run with id &#39;abcdef0123&#39;"),
        ("/eval/compare?a=RUN&b=RUN", 400, "b: choose a different run than a"),
        ("/eval/compare?a=RUN&b=RUNNING", 400, "share no successful case to compare"),
    ],
)
def test_unknown_runs_are_404_and_bad_queries_400(
    client: TestClient, evals: EvalData, url: str, status: int, message: str
):
    page = client.get(url.replace("RUNNING", evals.running).replace("RUN", evals.a))
    assert page.status_code == status
    assert message in page.text
    assert "<h1>" + str(status) + "</h1>" in page.text


def test_compare_shows_deltas_with_intervals_flips_with_both_traces_and_what_changed(
    client: TestClient, evals: EvalData
):
    page = client.get(f"/eval/compare?a={evals.a[:10]}&b={evals.b[:10]}")
    assert page.status_code == 200
    html = page.text
    assert "<b>5</b> shared cases compared" in html and "different datasets" not in html
    deltas = html.split('<table class="eval-deltas">')[1].split("</table>")[0]
    exact = row_of(deltas, "<td>exact_match</td>")
    assert exact[:4] == ["exact_match", "0.600", "0.400", "-0.200"]
    low, high = (float(x) for x in re.findall(r"[-+]\d\.\d{3}", exact[4]))
    assert low < -0.2 < high and low < 0 < high  # one case better, two worse: no clear change
    assert exact[5:] == ["5", "no clear change"]
    assert row_of(deltas, "<td>p50_latency_ms</td>")[0] == "p50_latency_ms"
    assert '<figure class="eval-means">' in html
    # the edited code is a new stack version: the only change
    changes = html.split('<ul class="eval-changes">')[1].split("</ul>")[0]
    assert re.fullmatch(
        r"\s*<li>stack version \(manifest or code\): \w+ -&gt; \w+</li>\s*", changes
    )
    assert '<tr class="changed"><td>stack version</td>' in html
    # flips: beta and gamma regressed (listed first), delta fixed; per metric
    flips = html.split('<table class="eval-flips">')[1].split("</table>")[0]
    rows = [cells(row) for row in re.findall(r"<tr>.*?</tr>", flips, flags=re.S)][1:]
    assert [(row[0], row[1], row[2], row[3]) for row in rows] == [
        ("b", "exact_match", "1.00", "0.00"),
        ("b", "token_f1", "1.00", "0.00"),
        ("g", "exact_match", "1.00", "0.00"),
        ("g", "token_f1", "1.00", "0.00"),
        ("d", "exact_match", "0.00", "1.00"),
        ("d", "token_f1", "0.00", "1.00"),
    ]
    assert rows[0][4:7] == ["beta", "BETA", "ateb"]
    trace_a, trace_b = evals.traces[evals.a]["b"], evals.traces[evals.b]["b"]
    assert trace_links(flips)[:2] == [trace_a, trace_b]
    assert f'href="/eval/compare?a={evals.b}&amp;b={evals.a}"' in html  # swap


def test_with_a_key_the_eval_pages_need_it(workspace: Workspace, evals: EvalData):
    with TestClient(
        create_console(workspace, api_keys=[KEY]), base_url="http://127.0.0.1"
    ) as keyed:
        page = keyed.get(f"/eval/runs/{evals.a}", follow_redirects=False)
        assert page.status_code == 303 and "/login?next=" in page.headers["location"]
        keyed.headers["Authorization"] = f"Bearer {KEY}"
        assert keyed.get(f"/eval/compare?a={evals.a}&b={evals.b}").status_code == 200
