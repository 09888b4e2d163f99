"""``slmops serve`` as a process: JSON logs, graceful shutdown, refusing unsafe binds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.cli.test_cli import assert_one_line_error, slmops
from tests.serve.test_server import free_port


def test_serve_refuses_a_public_bind_without_a_key(tmp_path: Path) -> None:
    assert_one_line_error(slmops("serve", "--host", "0.0.0.0", home=tmp_path), "without an API key")
    short = tmp_path / "keys.txt"
    short.write_text("# keys\nshort\n")
    assert_one_line_error(
        slmops("serve", "--keys-file", str(short), home=tmp_path), "at least 16 characters"
    )
    assert_one_line_error(slmops("serve", "--stack", "nope", home=tmp_path), "no stack 'nope'")


@pytest.mark.model
def test_serve_logs_json_and_finishes_in_flight_requests_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SLMOPS_HOME": str(tmp_path / "ws")}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slmops.cli.main",
            "serve",
            "--port",
            str(port),
            "-m",
            "local:smollm2-135m",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        result: dict[str, httpx.Response] = {}

        def long_request() -> None:
            result["response"] = httpx.post(
                url + "/v1/chat/completions",
                json={
                    "model": "local:smollm2-135m",
                    "messages": [{"role": "user", "content": "Tell me a story."}],
                    "max_tokens": 120,
                    "temperature": 0,
                },
                timeout=120,
            )

        worker = threading.Thread(target=long_request)
        worker.start()
        time.sleep(0.5)  # the request is being generated
        server.send_signal(signal.SIGTERM)
        worker.join(timeout=120)
        assert result["response"].status_code == 200  # finished, not cut off
        assert result["response"].json()["choices"][0]["message"]["content"]
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
    logs = [json.loads(line) for line in server.stderr.read().splitlines() if line.startswith("{")]
    requests = [entry for entry in logs if entry["message"] == "request"]
    assert (
        requests
        and requests[-1]["status"] == 200
        and requests[-1]["path"] == "/v1/chat/completions"
    )
    assert requests[-1]["request_id"] and requests[-1]["trace_id"]
