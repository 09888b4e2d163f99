"""Check that a traced slmops run really arrives in a real OTLP receiver (Arize Phoenix).

Starts ``phoenix serve`` from its own virtual environment on 127.0.0.1 (free ports, a fresh
working directory, telemetry and external resources off), waits for ``/healthz``, then runs a
small traced chain (a function step, then an LLM call answered by a scripted in-process
model) in a temporary workspace whose ``otlp_endpoint`` setting points at Phoenix's
OTLP/HTTP endpoint (``/v1/traces``). Leaving the workspace shuts the tracer down, which
flushes the batch exporter. The script then polls Phoenix's REST API
(``GET /v1/projects/default/spans?trace_id=...``) until both spans show up with the run's
trace id, the child under the root, and the GenAI attributes on the LLM span; it prints
PASS with the timings, or FAIL with what was missing, and stops Phoenix either way. Every
wait is bounded. Exit status: 0 on PASS, 1 on FAIL, 2 when the receiver cannot be started.

Phoenix is heavy (about 850 MB installed), so it lives in its own venv, never in the
project's; it installs from PyPI alone and serves without any other network access:

    python3.11 -m venv /tmp/phoenix-venv
    /tmp/phoenix-venv/bin/pip install arize-phoenix          # ~70 s here; 20.26.1 was tested

Run (the project's venv needs the ``otlp`` extra: ``pip install -e '.[otlp]'``):

    .venv/bin/python bench/otlp_receiver_check.py [--phoenix-venv /tmp/phoenix-venv]
        [--ready-timeout 120] [--arrive-timeout 30] [--keep]

``--keep`` leaves the temporary folder (Phoenix's log and SQLite database, the workspace)
in place and prints its path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from slmops.core.chain import Chain
from slmops.core.function import Function
from slmops.core.llm_call import LLMCall
from slmops.core.runtime import use_workspace
from slmops.models.base import ChatChunk, ChatMessage, ChatResult, GenerationParams, Usage

ROOT_STEP = "otlp_check"
LLM_STEP = "answer"
MODEL_URI = "fake:otlp-check"
REPLY = "Paris is the capital of France."
GENAI_ATTRIBUTES = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": MODEL_URI,
    "gen_ai.response.model": MODEL_URI,
    "gen_ai.usage.input_tokens": 7,
    "gen_ai.usage.output_tokens": len(REPLY.split()),
}
"""Attributes the LLM span must carry in the receiver, with the values it must have."""


class ScriptedModel:
    """A chat model that always gives :data:`REPLY` (no weights needed)."""

    uri = MODEL_URI

    def chat(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams | None = None,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> ChatResult:
        return ChatResult(REPLY, "stop", Usage(7, len(REPLY.split())), MODEL_URI, 0.001)

    def complete(self, prompt: str, params: GenerationParams | None = None) -> ChatResult:
        return self.chat([ChatMessage(role="user", content=prompt)], params)

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> Iterator[ChatChunk]:
        result = self.chat(messages, params)
        yield ChatChunk(text=result.text, finish_reason="stop", usage=result.usage)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class Phoenix:
    """``phoenix serve`` in its own process group, on loopback ports, in ``workdir``."""

    def __init__(self, venv: Path, workdir: Path) -> None:
        self.executable = venv / "bin" / "phoenix"
        self.port = free_port()
        self.grpc_port = free_port()
        self.workdir = workdir
        self.log_path = workdir / "phoenix.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def version(self) -> str:
        python = self.executable.parent / "python"
        done = subprocess.run(
            [
                str(python),
                "-c",
                "import importlib.metadata as m; print(m.version('arize-phoenix'))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout.strip() or "unknown"

    def start(self, ready_timeout: float) -> float:
        """Start and wait for ``/healthz``; returns the seconds it took."""
        if not self.executable.exists():
            raise RuntimeError(
                f"{self.executable} not found: install Phoenix first "
                "(python3.11 -m venv /tmp/phoenix-venv && "
                "/tmp/phoenix-venv/bin/pip install arize-phoenix)"
            )
        env = {
            **os.environ,
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(self.port),
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_WORKING_DIR": str(self.workdir),
            "PHOENIX_TELEMETRY_ENABLED": "false",
            "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        }
        for key in ("PHOENIX_SQL_DATABASE_URL", "PHOENIX_COLLECTOR_ENDPOINT"):
            env.pop(key, None)
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(self.executable), "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        while time.monotonic() - started < ready_timeout:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"phoenix exited with status {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"phoenix not ready after {ready_timeout:.0f} s:\n{self.log_tail()}")

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"trace_id": trace_id, "limit": 100})
        try:
            body = get_json(f"{self.base_url}/v1/projects/default/spans?{query}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # the default project appears with its first span
                return []
            raise
        data: list[dict[str, Any]] = body["data"]
        return data

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def run_traced_chain(home: Path, endpoint: str) -> tuple[str, float]:
    """Run the chain in a workspace that exports to ``endpoint``; returns the trace id and
    the time (``time.monotonic()``) at which the tracer's flush began."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'otlp_endpoint = "{endpoint}"\n')
    question = Function(lambda text: text.strip(), name="question", input_type=str, output_type=str)
    answer = LLMCall(
        LLM_STEP, prompt="Answer briefly: {{ input }}", input_type=str, model=ScriptedModel()
    )
    chain = Chain(ROOT_STEP, [question, answer])
    with use_workspace(home):
        result = chain.invoke("  What is the capital of France?  ")
        if result.output != REPLY:
            raise RuntimeError(f"unexpected output {result.output!r}")
        flushed_at = time.monotonic()  # leaving the block shuts the tracer down (flush)
    return result.trace_id, flushed_at


def check(spans: list[dict[str, Any]], trace_id: str) -> list[str]:
    """What is still missing from the spans Phoenix returned (empty when all is there)."""
    by_name = {span["name"]: span for span in spans}
    problems = [f"span {name!r} not there" for name in (ROOT_STEP, LLM_STEP) if name not in by_name]
    if problems:
        return problems
    root, llm = by_name[ROOT_STEP], by_name[LLM_STEP]
    for span in (root, llm):
        if span["context"]["trace_id"] != trace_id:
            problems.append(f"{span['name']}: trace id {span['context']['trace_id']}")
    if root.get("parent_id"):
        problems.append(f"{ROOT_STEP} has a parent {root['parent_id']}")
    if llm.get("parent_id") != root["context"]["span_id"]:
        problems.append(f"{LLM_STEP} is not under {ROOT_STEP}")
    for key, expected in GENAI_ATTRIBUTES.items():
        if llm["attributes"].get(key) != expected:
            problems.append(f"{LLM_STEP}.{key} = {llm['attributes'].get(key)!r}, not {expected!r}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phoenix-venv", type=Path, default=Path("/tmp/phoenix-venv"))
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--arrive-timeout", type=float, default=30.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="slmops-otlp-check-"))
    phoenix = Phoenix(args.phoenix_venv, folder / "phoenix")
    phoenix.workdir.mkdir()
    try:
        print(f"receiver: arize-phoenix {phoenix.version()} from {args.phoenix_venv}")
        try:
            ready_s = phoenix.start(args.ready_timeout)
        except RuntimeError as exc:
            print(f"FAIL: receiver did not start: {exc}")
            return 2
        endpoint = f"{phoenix.base_url}/v1/traces"
        print(f"receiver ready in {ready_s:.1f} s; OTLP/HTTP endpoint {endpoint}")

        trace_id, flushed_at = run_traced_chain(folder / "workspace", endpoint)
        flush_s = time.monotonic() - flushed_at
        print(f"ran {ROOT_STEP!r}: trace {trace_id}; tracer shut down in {flush_s:.2f} s")

        polls = 0
        while True:  # at least one poll, however long the flush took
            polls += 1
            spans = phoenix.spans(trace_id)
            problems = check(spans, trace_id)
            if not problems:
                arrived_s = time.monotonic() - flushed_at
                llm = next(span for span in spans if span["name"] == LLM_STEP)
                genai = {k: llm["attributes"][k] for k in GENAI_ATTRIBUTES}
                print(
                    f"PASS: {len(spans)} spans of trace {trace_id} queryable in Phoenix "
                    f"{arrived_s:.2f} s after the flush began ({polls} polls); "
                    f"names {sorted(span['name'] for span in spans)}; {LLM_STEP} {genai}"
                )
                return 0
            if time.monotonic() - flushed_at >= args.arrive_timeout:
                break
            time.sleep(0.2)
        waited_s = time.monotonic() - flushed_at
        print(f"FAIL: {waited_s:.1f} s after the flush ({polls} polls): {'; '.join(problems)}")
        print(phoenix.log_tail())
        return 1
    finally:
        phoenix.stop()
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
