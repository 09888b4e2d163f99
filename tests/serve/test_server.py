"""slmops serve, for real: uvicorn on a loopback port, the shipped models, the official
``openai`` client and raw HTTP for the error cases."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from slmops.apps.quickstart import bundled_docs
from slmops.apps.templates import ensure_workspace_stack
from slmops.core.runtime import Runtime
from slmops.data.corpus import corpora_for
from slmops.serve.app import ServeConfig
from slmops.serve.server import build_catalog, running_server
from slmops.store import Workspace
from slmops.store.traces import get_trace, list_traces

pytestmark = pytest.mark.model
MODEL = "local:smollm2-135m"
EMBEDDER = "local:all-minilm-l6-v2"
KEY = "test-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One server for the module: the shipped model and embedder, and a rag stack."""
    root = tmp_path_factory.mktemp("serve")
    workspace = Workspace.open(root / "ws")
    corpora_for(workspace).ingest("docs", [bundled_docs()])
    ensure_workspace_stack("docs-rag", "rag", workspace, answer="generative")
    ensure_workspace_stack("docs-extract", "rag", workspace, answer="extractive")
    catalog = build_catalog(
        workspace, models=[MODEL], stacks=["docs-rag", "docs-extract"], embedders=[EMBEDDER]
    )
    runtime = Runtime.from_workspace(workspace)
    config = ServeConfig(api_keys=(KEY,), max_queue=32)
    with running_server(catalog, runtime, config, port=free_port()) as url:
        yield {"url": url, "workspace": workspace, "catalog": catalog, "runtime": runtime}
    workspace.close()


def client(served: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=served["url"] + "/v1", api_key=KEY, max_retries=0)


def raw(
    served: dict[str, Any], path: str, *, key: str | None = KEY, **kwargs: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers.update(kwargs.pop("headers", {}))
    return httpx.post(served["url"] + path, headers=headers, timeout=120, **kwargs)


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def test_chat_non_streaming_through_the_openai_client(served: dict[str, Any]) -> None:
    raw_response = client(served).chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "What is the capital of France? Answer in one sentence."}
        ],
        max_tokens=32,
        temperature=0,
    )
    answer = raw_response.parse()
    assert "Paris" in answer.choices[0].message.content
    assert answer.usage.prompt_tokens > 0 and 0 < answer.usage.completion_tokens <= 32
    request_id = raw_response.headers["x-request-id"]
    trace_id = raw_response.headers["x-slmops-trace-id"]
    _, spans = get_trace(served["workspace"].engine, trace_id)
    assert spans[0]["attributes"]["slmops.request_id"] == request_id
    assert spans[0]["attributes"]["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens


def test_chat_streaming_through_the_openai_client(served: dict[str, Any]) -> None:
    stream = client(served).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=40,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for event in stream:
        if event.choices:
            pieces.append(event.choices[0].delta.content or "")
            finish = event.choices[0].finish_reason or finish
        if event.usage:
            usage = event.usage
    assert len(pieces) > 3 and "".join(pieces).strip()
    assert finish in ("stop", "length") and usage.completion_tokens > 0
    whole = client(served).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=40,
        temperature=0,
    )
    assert "".join(pieces) == whole.choices[0].message.content


def test_completions_and_embeddings(served: dict[str, Any]) -> None:
    api = client(served)
    raw_done = api.completions.with_raw_response.create(
        model=MODEL, prompt="The sky is", max_tokens=8, temperature=0
    )
    done = raw_done.parse()
    assert done.choices[0].text and done.usage.completion_tokens > 0
    # traced like a chat call: one llm span with the raw prompt, the reply and its usage
    _, (span,) = get_trace(served["workspace"].engine, raw_done.headers["x-slmops-trace-id"])
    attributes = span["attributes"]
    assert (span["kind"], attributes["gen_ai.operation.name"]) == ("llm", "text_completion")
    assert attributes["slmops.request_id"] == raw_done.headers["x-request-id"]
    assert attributes["gen_ai.prompt"] == "The sky is"
    assert attributes["slmops.llm.response"] == done.choices[0].text
    assert attributes["gen_ai.usage.output_tokens"] == done.usage.completion_tokens
    assert attributes["slmops.state"] == "complete"
    streamed = "".join(
        e.choices[0].text
        for e in api.completions.create(
            model=MODEL, prompt="The sky is", max_tokens=8, temperature=0, stream=True
        )
    )
    assert streamed == done.choices[0].text
    vectors = api.embeddings.create(model=EMBEDDER, input=["small models", "tiny LMs"])
    assert [len(d.embedding) for d in vectors.data] == [384, 384]
    assert vectors.usage.prompt_tokens > 0
    listed = {m.id for m in api.models.list()}
    assert listed == {MODEL, "stack:docs-rag", "stack:docs-extract", EMBEDDER}


def test_a_stack_is_a_model_with_citations_and_trace(served: dict[str, Any]) -> None:
    raw_response = client(served).chat.completions.with_raw_response.create(
        model="stack:docs-rag", messages=[{"role": "user", "content": "How do I version a prompt?"}]
    )
    answer = raw_response.parse()
    extension = answer.model_extra["slmops"]
    assert answer.choices[0].message.content == extension["output"]["answer"]
    assert extension["citations"][0]["source"].startswith("06-prompts.md")
    assert extension["versions"]["corpora"] == {"docs": "docs@1"}
    assert raw_response.headers["x-slmops-trace-id"] == extension["trace_id"]
    assert "06-prompts.md" in raw_response.headers["x-slmops-sources"]
    assert answer.usage.completion_tokens > 0  # summed from the stack's model calls

    stream = client(served).chat.completions.create(
        model="stack:docs-rag",
        messages=[{"role": "user", "content": "How do I version a prompt?"}],
        stream=True,
    )
    events = list(stream)
    assert (
        "".join(e.choices[0].delta.content or "" for e in events) == extension["output"]["answer"]
    )
    assert events[-1].model_extra["slmops"]["citations"]


def test_an_extractive_stack_answers_with_cited_sentences_whole(served: dict[str, Any]) -> None:
    question = [{"role": "user", "content": "Which environment variable chooses the workspace?"}]
    answer = client(served).chat.completions.create(model="stack:docs-extract", messages=question)
    extension = answer.model_extra["slmops"]
    assert "SLMOPS_HOME" in (answer.choices[0].message.content or "")
    assert extension["output"]["extracted"] and extension["output"]["mode"] == "extractive"
    assert extension["citations"][0]["source"].startswith("02-workspace.md, line")
    assert answer.usage.completion_tokens == 0  # no model call: the passages' own sentence
    events = list(
        client(served).chat.completions.create(
            model="stack:docs-extract", messages=question, stream=True
        )
    )
    streamed = "".join(e.choices[0].delta.content or "" for e in events)
    assert streamed == answer.choices[0].message.content  # sent whole, once


def test_api_keys(served: dict[str, Any]) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    missing = assert_openai_error(raw(served, "/v1/chat/completions", key=None, json=body), 401)
    assert missing["code"] == "invalid_api_key"
    assert_openai_error(raw(served, "/v1/chat/completions", key="wrong-key", json=body), 401)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served["url"] + "/v1", api_key="nope", max_retries=0).models.list()
    assert raw(served, "/v1/chat/completions", json=body).status_code == 200
    assert httpx.get(served["url"] + "/healthz").json() == {"status": "ok"}


def test_bad_requests_get_openai_style_errors(served: dict[str, Any]) -> None:
    malformed = raw(
        served,
        "/v1/chat/completions",
        content=b'{"model": "x", "messages": [',
        headers={"Content-Type": "application/json"},
    )
    assert "not valid JSON" in assert_openai_error(malformed, 400)["message"]
    unknown = raw(
        served,
        "/v1/chat/completions",
        json={"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert assert_openai_error(unknown, 404, "model")["code"] == "model_not_found"
    negative = raw(
        served,
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5},
    )
    assert_openai_error(negative, 400, "max_tokens")
    too_many = raw(
        served,
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6},
    )
    assert "at most 2048" in assert_openai_error(too_many, 400, "max_tokens")["message"]
    no_messages = raw(served, "/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert_openai_error(no_messages, 400, "messages")
    oversized = raw(served, "/v1/embeddings", json={"model": EMBEDDER, "input": "x" * 2_000_000})
    assert assert_openai_error(oversized, 413)["code"] == "request_too_large"


def test_twenty_concurrent_streams_are_complete_and_uncorrupted(served: dict[str, Any]) -> None:
    prompts = [f"Write one sentence about the number {n}." for n in range(4)]
    api = client(served)
    expected = {
        p: api.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": p}], max_tokens=24, temperature=0
        )
        .choices[0]
        .message.content
        for p in prompts
    }

    async def one(api: openai.AsyncOpenAI, prompt: str) -> str:
        stream = await api.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=24,
            temperature=0,
            stream=True,
        )
        return "".join([e.choices[0].delta.content or "" async for e in stream if e.choices])

    async def all_clients() -> list[tuple[str, str]]:
        async with openai.AsyncOpenAI(
            base_url=served["url"] + "/v1", api_key=KEY, max_retries=0, timeout=300
        ) as api:
            asked = [prompts[i % 4] for i in range(20)]
            answers = await asyncio.gather(*(one(api, p) for p in asked))
            return list(zip(asked, answers, strict=True))

    results = asyncio.run(all_clients())
    assert len(results) == 20
    for prompt, answer in results:
        assert answer == expected[prompt]


def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    workspace = Workspace.open(tmp_path / "ws")
    catalog = build_catalog(workspace, models=[MODEL], stacks=[], embedders=[])
    # one generation at a time, nobody may wait
    config = ServeConfig(max_queue=0, local_concurrency=1)
    with running_server(
        catalog, Runtime.from_workspace(workspace), config, port=free_port()
    ) as url:
        long_body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Write a long story about a robot."}],
            "max_tokens": 400,
            "stream": True,
        }
        started = threading.Event()

        def hold() -> None:
            with httpx.stream(
                "POST", url + "/v1/chat/completions", json=long_body, timeout=120
            ) as r:
                for _ in r.iter_lines():
                    started.set()

        holder = threading.Thread(target=hold)
        holder.start()
        assert started.wait(60)
        busy = httpx.post(
            url + "/v1/chat/completions", json={**long_body, "stream": False}, timeout=60
        )
        holder.join()
        error = assert_openai_error(busy, 429)
        assert error["type"] == "rate_limit_error" and int(busy.headers["retry-after"]) >= 1
        after = httpx.post(
            url + "/v1/chat/completions",
            json={**long_body, "max_tokens": 4, "stream": False},
            timeout=60,
        )
        assert after.status_code == 200
    workspace.close()


def test_a_disconnected_stream_stops_the_model(served: dict[str, Any]) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a very long story about the sea."}],
        "max_tokens": 1500,
        "temperature": 0,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {KEY}", "X-Request-Id": "disconnect-test-1"}
    with httpx.stream(
        "POST", served["url"] + "/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        for count, _ in enumerate(response.iter_lines()):
            if count > 5:
                break  # leave mid-stream
    engine = served["workspace"].engine
    span = None
    for _ in range(100):
        for trace in list_traces(engine, limit=10):
            _, spans = get_trace(engine, trace["trace_id"])
            if spans[0]["attributes"].get("slmops.request_id") == "disconnect-test-1":
                span = spans[0]
        if span is not None:
            break
        threading.Event().wait(0.1)
    assert span is not None, "the cancelled request left no trace"
    assert span["attributes"]["slmops.state"] == "cancelled"
    assert (span["end_ns"] - span["start_ns"]) / 1e9 < 10  # 1500 tokens would take ~15 s


def test_metrics_reflect_the_requests(served: dict[str, Any]) -> None:
    api = client(served)
    api.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    text = httpx.get(served["url"] + "/metrics").text
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    ok = f'slmops_requests_total{{endpoint="chat",model="{MODEL}",status="200"}}'
    assert samples[ok] >= 1
    assert samples[f'slmops_tokens_total{{direction="completion",model="{MODEL}"}}'] > 0
    assert samples[f'slmops_request_duration_seconds_count{{endpoint="chat",model="{MODEL}"}}'] >= 1
    assert samples[f'slmops_time_to_first_token_seconds_count{{model="{MODEL}"}}'] >= 1
    assert 'slmops_queue_depth{model="local"}' in samples
    assert httpx.get(served["url"] + "/readyz").json()["status"] == "ready"
    json.dumps(samples)  # plain numbers only


def test_the_readme_client_example_runs(
    served: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = re.findall(r"```py\n(.*?)```", readme, flags=re.DOTALL)[0]
    block = block.replace("http://127.0.0.1:8000", served["url"]).replace(
        "handbook-rag", "docs-rag"
    )
    exec(compile(block, "README.md serve example", "exec"), {"KEY": KEY})
    printed = capsys.readouterr().out
    assert "06-prompts.md" in printed and "'support'" in printed


def test_an_openai_upstream_gets_concurrent_requests(
    served: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proxying to an OpenAI-compatible server (which batches on its side), requests go
    through at once: with no waiting allowed, three concurrent calls still all succeed."""
    monkeypatch.setenv("SLMOPS_OPENAI_API_KEY", KEY)
    upstream = f"openai:{served['url']}/v1#{MODEL}"
    workspace = Workspace.open(tmp_path / "ws")
    catalog = build_catalog(workspace, models=[upstream], stacks=[], embedders=[])
    config = ServeConfig(max_queue=0, remote_concurrency=4)
    with running_server(
        catalog, Runtime.from_workspace(workspace), config, port=free_port()
    ) as url:

        async def three() -> list[int]:
            body = {
                "model": upstream,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 8,
            }
            async with httpx.AsyncClient(timeout=120) as http:
                calls = [http.post(url + "/v1/chat/completions", json=body) for _ in range(3)]
                return [r.status_code for r in await asyncio.gather(*calls)]

        assert asyncio.run(three()) == [200, 200, 200]
    workspace.close()


def test_cors_is_off_unless_an_origin_is_allowed(served: dict[str, Any], tmp_path: Path) -> None:
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    closed = httpx.options(served["url"] + "/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    workspace = Workspace.open(tmp_path / "ws")
    catalog = build_catalog(workspace, models=[], stacks=[], embedders=[EMBEDDER])
    config = ServeConfig(cors_origins=("https://app.example",))
    with running_server(
        catalog, Runtime.from_workspace(workspace), config, port=free_port()
    ) as url:
        opened = httpx.options(url + "/v1/embeddings", headers=preflight)
        assert opened.headers["access-control-allow-origin"] == "https://app.example"
    workspace.close()
