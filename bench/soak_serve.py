"""Soak: ``slmops serve`` as a real process under sustained overload for a bounded time.

Many concurrent clients mix streamed and whole chat completions, streams left after a few
chunks, requests whose client gives up after a fraction of a second, embeddings and
``/v1/models``, against a small ``--max-queue`` so that most of them get ``429``. Every few
seconds the server process is sampled (RSS, open files, threads, sockets). After the load a
probe request must answer at once (nothing leaked a generation slot), the idle process must be
back to its open files and threads, and SIGTERM must end it cleanly.

    python bench/soak_serve.py                      # the shipped model, 10 minutes
    python bench/soak_serve.py --duration 300 --csv soak.csv --plot docs/images/soak.svg
    python bench/soak_serve.py --tiny --duration 30 --no-embedder   # a tiny GGUF: seconds
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from html import escape
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = "local:smollm2-135m"
SHIPPED_EMBEDDER = "local:all-minilm-l6-v2"


@dataclass
class SoakConfig:
    model: str = SHIPPED_MODEL
    embedder: str | None = SHIPPED_EMBEDDER
    duration_s: float = 600.0
    clients: int = 24
    max_queue: int = 4
    max_tokens: int = 48  # each request asks for 1..max_tokens
    sample_every_s: float = 2.0
    hang_after_s: float = 60.0  # no answer (or no next chunk) within this: a hung request
    # the server's own bound (serve --request-timeout), under hang_after_s: a generation it
    # stops is answered 504 (or an error event in a stream), which is not a hang
    request_timeout_s: float = 45.0
    warmup_s: float = 0.0  # RSS slope from here on; 0: a fifth of the run, at most 60 s
    seed: int = 0
    home: Path | None = None  # the server's workspace; a temporary one when None


@dataclass
class Sample:
    t: float
    rss_mb: float
    fds: int
    threads: int
    connections: int
    done: int  # requests finished so far


@dataclass
class SoakReport:
    config: SoakConfig
    load_s: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)  # "200", "429", "client-timeout", ...
    kinds: Counter[str] = field(default_factory=Counter)  # "stream 200", "whole 429", ...
    latencies_200: list[float] = field(default_factory=list)
    disconnects: int = 0  # streams the client left mid-way
    client_timeouts: int = 0  # requests the client gave up on on purpose
    hung: list[str] = field(default_factory=list)  # what went past hang_after_s
    max_latency_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    baseline: Sample | None = None  # idle, after one request of each kind
    after: Sample | None = None  # idle again, after the load
    probe_s: float | None = None  # a request after the load: answered in (None: it was not)
    server_statuses: dict[str, float] = field(default_factory=dict)  # from /metrics
    shutdown_s: float | None = None
    exit_code: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def server_errors(self) -> int:
        """5xx other than 504, the server stopping a generation at its request timeout."""
        return sum(
            n for s, n in self.statuses.items() if s.isdigit() and int(s) >= 500 and s != "504"
        )

    def stopped_at_timeout(self) -> int:
        return self.statuses["504"] + self.statuses["generation_timeout"]

    def percentile(self, q: float) -> float:
        values = sorted(self.latencies_200)
        if not values:
            return math.nan
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]

    def rss_slope_mb_per_min(self) -> float:
        """Least-squares slope of RSS over the samples after warm-up."""
        warm = self.config.warmup_s or min(60.0, self.load_s / 5)
        points = [(s.t, s.rss_mb) for s in self.samples if s.t >= warm]
        if len(points) < 3:
            return math.nan
        mean_t = statistics.fmean(t for t, _ in points)
        mean_r = statistics.fmean(r for _, r in points)
        spread = sum((t - mean_t) ** 2 for t, _ in points)
        if spread == 0:
            return math.nan
        return 60 * sum((t - mean_t) * (r - mean_r) for t, r in points) / spread

    def rss_growth_after_warmup_mb(self) -> float:
        warm = self.config.warmup_s or min(60.0, self.load_s / 5)
        later = [s.rss_mb for s in self.samples if s.t >= warm]
        if not later:
            return math.nan
        return max(later) - later[0]

    def summary(self) -> list[tuple[str, str]]:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        rows = [
            ("model", self.config.model),
            (
                "load",
                f"{self.load_s:.0f} s, {self.config.clients} clients, "
                f"--max-queue {self.config.max_queue}, max_tokens 1-{self.config.max_tokens}",
            ),
            ("requests", f"{self.total} ({self.total / max(self.load_s, 1e-9):.1f}/s)"),
            ("by status", statuses),
            ("by kind", ", ".join(f"{k}: {n}" for k, n in sorted(self.kinds.items()))),
            ("429 share", f"{self.statuses['429'] / max(self.total, 1):.0%}"),
            (
                "latency of 200s",
                f"p50 {self.percentile(0.5):.2f} s, p95 {self.percentile(0.95):.2f} s, "
                f"max {max(self.latencies_200, default=math.nan):.2f} s",
            ),
            ("streams left mid-way", str(self.disconnects)),
            ("client timeouts (on purpose)", str(self.client_timeouts)),
            ("hung requests", f"{len(self.hung)} (bound {self.config.hang_after_s:g} s)"),
            (
                "stopped by the server",
                f"{self.stopped_at_timeout()} at --request-timeout "
                f"{self.config.request_timeout_s:g} s (504 or an error event)",
            ),
            ("other 5xx", str(self.server_errors())),
        ]
        if self.samples and self.baseline is not None:
            peak = max(s.rss_mb for s in self.samples)
            end = self.after or self.samples[-1]
            rows += [
                (
                    "RSS MB",
                    f"baseline {self.baseline.rss_mb:.0f}, peak {peak:.0f}, "
                    f"end {end.rss_mb:.0f}; after warm-up "
                    f"+{self.rss_growth_after_warmup_mb():.1f}, "
                    f"slope {self.rss_slope_mb_per_min():+.2f} MB/min",
                ),
                (
                    "open files",
                    f"baseline {self.baseline.fds}, peak {max(s.fds for s in self.samples)}, "
                    f"after {end.fds}",
                ),
                (
                    "threads",
                    f"baseline {self.baseline.threads}, "
                    f"peak {max(s.threads for s in self.samples)}, after {end.threads}",
                ),
                (
                    "sockets",
                    f"baseline {self.baseline.connections}, "
                    f"peak {max(s.connections for s in self.samples)}, after {end.connections}",
                ),
            ]
        probe = "no answer" if self.probe_s is None else f"200 in {self.probe_s:.2f} s"
        server = ", ".join(f"{s}: {n:.0f}" for s, n in sorted(self.server_statuses.items()))
        rows += [
            ("request after the load", probe),
            ("server's count by status", server or "-"),
            (
                "SIGTERM",
                "did not exit"
                if self.shutdown_s is None
                else f"exited in {self.shutdown_s:.2f} s, code {self.exit_code}",
            ),
        ]
        if self.errors:
            rows.append(("unexpected", "; ".join(sorted(set(self.errors))[:5])))
        return rows


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tiny_gguf(folder: Path) -> str:
    """The tests' tiny Llama GGUF (2 layers, 64 dimensions): llama.cpp at thousands of tokens
    per second, so the soak exercises the server rather than the model."""
    sys.path.insert(0, str(REPO))
    from tests.train.tiny_model import write_tiny_gguf

    return f"gguf:{write_tiny_gguf(folder / 'tiny.gguf')}"


def sample(process: psutil.Process, t: float, done: int) -> Sample:
    with process.oneshot():
        return Sample(
            t=round(t, 2),
            rss_mb=process.memory_info().rss / 2**20,
            fds=process.num_fds(),
            threads=process.num_threads(),
            connections=len(process.net_connections(kind="inet")),
            done=done,
        )


class Load:
    """The clients: each loops until the deadline over a random mix of requests."""

    def __init__(self, url: str, config: SoakConfig, report: SoakReport) -> None:
        self.url, self.config, self.report = url, config, report
        self.rng = random.Random(config.seed)
        kinds = {
            "stream": 30,
            "stream-left": 15,
            "whole": 25,
            "whole-impatient": 10,
            "models": 5,
            "embeddings": 15 if config.embedder else 0,
        }
        self.kinds = [k for k, w in kinds.items() if w]
        self.weights = [w for w in kinds.values() if w]

    def _chat(self, stream: bool) -> dict[str, Any]:
        words = " ".join(self.rng.choice(["sea", "robot", "tea", "code", "moon"]) for _ in range(5))
        return {
            "model": self.config.model,
            "messages": [{"role": "user", "content": f"Tell me about {words}."}],
            "max_tokens": self.rng.randint(1, self.config.max_tokens),
            "stream": stream,
        }

    async def one(self, client: httpx.AsyncClient, kind: str) -> None:
        report, bound = self.report, self.config.hang_after_s
        started = time.perf_counter()
        status = "?"
        try:
            async with asyncio.timeout(bound):
                if kind == "models":
                    status = str((await client.get(self.url + "/v1/models")).status_code)
                elif kind == "embeddings":
                    body = {"model": self.config.embedder, "input": ["a short text", "another"]}
                    response = await client.post(self.url + "/v1/embeddings", json=body)
                    status = str(response.status_code)
                elif kind == "whole":
                    response = await client.post(
                        self.url + "/v1/chat/completions", json=self._chat(False)
                    )
                    status = str(response.status_code)
                    if status == "200" and not response.json()["choices"]:
                        report.errors.append("a 200 without choices")
                elif kind == "whole-impatient":
                    try:
                        response = await client.post(
                            self.url + "/v1/chat/completions",
                            json=self._chat(False),
                            timeout=self.rng.uniform(0.05, 0.5),
                        )
                        status = str(response.status_code)
                    except httpx.TimeoutException:
                        status = "client-timeout"
                        report.client_timeouts += 1
                else:
                    leave_after = self.rng.randint(1, 4) if kind == "stream-left" else None
                    status = await self._stream(client, leave_after)
        except TimeoutError:
            status = "hung"
            report.hung.append(f"{kind} after {time.perf_counter() - started:.1f} s")
        except httpx.HTTPError as exc:
            status = f"error:{type(exc).__name__}"
            report.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
        elapsed = time.perf_counter() - started
        report.max_latency_s = max(report.max_latency_s, elapsed)
        report.statuses[status] += 1
        report.kinds[f"{kind} {status}"] += 1
        if status == "200" and kind in ("stream", "whole"):
            report.latencies_200.append(elapsed)

    async def _stream(self, client: httpx.AsyncClient, leave_after: int | None) -> str:
        async with client.stream(
            "POST", self.url + "/v1/chat/completions", json=self._chat(True)
        ) as response:
            if response.status_code != 200:
                await response.aread()
                return str(response.status_code)
            chunks = 0
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    return "200"
                if '"error"' in line:
                    return str(json.loads(line[6:])["error"].get("code") or "stream-error")
                chunks += 1
                if leave_after is not None and chunks >= leave_after:
                    self.report.disconnects += 1
                    return "left"  # closing the response drops the connection
            return "stream-cut"  # the server ended the stream without [DONE]

    async def client(self, client: httpx.AsyncClient, deadline: float) -> None:
        while time.monotonic() < deadline:
            kind = self.rng.choices(self.kinds, self.weights)[0]
            before = self.report.statuses["429"]
            await self.one(client, kind)
            if self.report.statuses["429"] > before:  # refused: come back soon, not at once
                await asyncio.sleep(self.rng.uniform(0.0, 0.2))

    async def run(self, process: psutil.Process) -> None:
        limits = httpx.Limits(max_connections=self.config.clients * 2, max_keepalive_connections=8)
        timeout = httpx.Timeout(self.config.hang_after_s + 5)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            started = time.monotonic()
            deadline = started + self.config.duration_s
            workers = [
                asyncio.create_task(self.client(client, deadline))
                for _ in range(self.config.clients)
            ]
            while not all(w.done() for w in workers):
                self.report.samples.append(
                    await asyncio.to_thread(
                        sample, process, time.monotonic() - started, self.report.total
                    )
                )
                await asyncio.wait(workers, timeout=self.config.sample_every_s)
            for worker in workers:
                worker.result()
            self.report.load_s = time.monotonic() - started


def _wait_ready(url: str, server: subprocess.Popen[str], limit_s: float = 300) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before it was ready")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server was not ready in time")


def _warm(url: str, config: SoakConfig) -> None:
    """One request of each kind, so lazily made threads and caches exist before the baseline."""
    chat = {
        "model": config.model,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": config.max_tokens,
    }
    for stream in (False, True):
        httpx.post(url + "/v1/chat/completions", json={**chat, "stream": stream}, timeout=120)
    if config.embedder:
        httpx.post(
            url + "/v1/embeddings", json={"model": config.embedder, "input": "x"}, timeout=60
        )
    httpx.get(url + "/v1/models", timeout=10)


def _server_statuses(url: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("slmops_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            status = labels.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0.0) + float(value)
    return counts


def _idle_sample(process: psutil.Process, t: float, done: int, settle_s: float = 2.0) -> Sample:
    """The process once idle: its open files and threads once they stop changing (closed
    sockets linger a moment)."""
    time.sleep(settle_s)
    last = sample(process, t, done)
    for _ in range(10):
        time.sleep(0.5)
        now = sample(process, t, done)
        if (now.fds, now.threads, now.connections) == (last.fds, last.threads, last.connections):
            return now
        last = now
    return last


def run_soak(config: SoakConfig, *, log: Any = print) -> SoakReport:
    """Start the server, warm it, load it for ``duration_s``, check it after, stop it."""
    report = SoakReport(config)
    with tempfile.TemporaryDirectory(prefix="slmops-soak-") as scratch:
        home = config.home or Path(scratch) / "ws"
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "slmops.cli.main",
            "serve",
            "--port",
            str(port),
            "-m",
            config.model,
            "--max-queue",
            str(config.max_queue),
            "--max-tokens",
            str(config.max_tokens),
            "--request-timeout",
            str(config.request_timeout_s),
        ]
        if config.embedder:
            command += ["-e", config.embedder]
        server_log = (Path(scratch) / "server.log").open("w")
        server = subprocess.Popen(
            command,
            env={**os.environ, "SLMOPS_HOME": str(home)},
            stdout=subprocess.DEVNULL,
            stderr=server_log,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, server)
            process = psutil.Process(server.pid)
            _warm(url, config)
            report.baseline = _idle_sample(process, 0.0, 0, settle_s=1.0)
            log(f"ready: {url}; loading for {config.duration_s:g} s with {config.clients} clients")
            asyncio.run(Load(url, config, report).run(process))
            # anyio ends a worker thread idle for 10 s when the next request comes in
            time.sleep(11)
            started = time.perf_counter()
            try:
                probe = httpx.post(
                    url + "/v1/chat/completions",
                    json={
                        "model": config.model,
                        "messages": [{"role": "user", "content": "Hi"}],
                        "max_tokens": 4,
                    },
                    timeout=config.hang_after_s,
                )
                if probe.status_code == 200:
                    report.probe_s = time.perf_counter() - started
            except httpx.TimeoutException:
                pass
            report.after = _idle_sample(process, report.load_s, report.total)
            report.server_statuses = _server_statuses(url)
            started = time.perf_counter()
            server.send_signal(signal.SIGTERM)
            try:
                report.exit_code = server.wait(timeout=60)
                report.shutdown_s = time.perf_counter() - started
            except subprocess.TimeoutExpired:
                pass
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            server_log.close()
            log_tail = (Path(scratch) / "server.log").read_text(errors="replace")[-4000:]
            if report.exit_code not in (0, -signal.SIGTERM) or report.server_errors():
                log(log_tail)
    return report


def write_csv(report: SoakReport, path: Path) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["t_s", "rss_mb", "fds", "threads", "connections", "requests_done"])
        for s in report.samples:
            writer.writerow([s.t, f"{s.rss_mb:.1f}", s.fds, s.threads, s.connections, s.done])


def plot_svg(report: SoakReport) -> str:
    """Four small panels over time: RSS, open files, threads, requests per second."""
    samples = report.samples
    rates = [0.0] + [(b.done - a.done) / max(b.t - a.t, 1e-9) for a, b in pairwise(samples)]
    panels = [
        ("RSS (MB)", [s.rss_mb for s in samples], "#2563eb"),
        ("open files", [float(s.fds) for s in samples], "#16a34a"),
        ("threads", [float(s.threads) for s in samples], "#9333ea"),
        ("requests/s", rates, "#ea580c"),
    ]
    width, panel_h, left, right, top = 720, 110, 70, 20, 58
    height = top + len(panels) * panel_h + 30
    end_t = max((s.t for s in samples), default=1.0) or 1.0
    statuses = report.statuses
    title = f"slmops serve ({report.config.model}) under overload for {report.load_s:.0f} s"
    subtitle = (
        f"{report.total} requests: {statuses['200']} answered, {statuses['429']} refused "
        f"with 429, {report.disconnects + report.client_timeouts} abandoned by their client; "
        f"{len(report.hung)} hung, {report.stopped_at_timeout()} stopped at the request "
        f"timeout, {report.server_errors()} other 5xx"
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="20" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<text x="{left}" y="36" fill="#334155">{escape(subtitle)}</text>',
    ]
    inner_w = width - left - right
    for index, (name, values, colour) in enumerate(panels):
        y0 = top + index * panel_h
        plot_h = panel_h - 30
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        if name != "RSS (MB)":
            low = 0.0
        pad = (high - low) * 0.1 or max(abs(high) * 0.05, 1.0)
        low, high = (low - pad if name == "RSS (MB)" else low), high + pad
        parts.append(
            f'<rect x="{left}" y="{y0}" width="{inner_w}" height="{plot_h}" fill="#f8fafc" '
            'stroke="#cbd5e1"/>'
        )
        parts.append(f'<text x="{left}" y="{y0 - 4}" fill="#334155">{escape(name)}</text>')
        for value, dy in ((high, 4), (low, plot_h)):
            parts.append(
                f'<text x="{left - 6}" y="{y0 + dy}" text-anchor="end" fill="#64748b">'
                f"{value:.0f}</text>"
            )
        points = " ".join(
            f"{left + inner_w * s.t / end_t:.1f},"
            f"{y0 + plot_h - plot_h * (v - low) / (high - low):.1f}"
            for s, v in zip(samples, values, strict=True)
        )
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
        )
    axis_y = top + len(panels) * panel_h
    for tick in range(0, int(end_t) + 1, max(1, int(end_t / 6) // 10 * 10 or 1)):
        x = left + inner_w * tick / end_t
        parts.append(
            f'<text x="{x:.1f}" y="{axis_y - 10}" text-anchor="middle" fill="#64748b">{tick}</text>'
        )
    parts.append(
        f'<text x="{left + inner_w / 2}" y="{axis_y + 8}" text-anchor="middle" '
        'fill="#334155">seconds</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=SHIPPED_MODEL, help="chat model URI to serve")
    parser.add_argument("--tiny", action="store_true", help="serve the tests' tiny GGUF instead")
    parser.add_argument("--embedder", default=SHIPPED_EMBEDDER)
    parser.add_argument("--no-embedder", action="store_true", help="no embeddings requests")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--short", action="store_true", help="60 s, for a quick look")
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--max-queue", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--hang-after", type=float, default=60.0)
    parser.add_argument(
        "--request-timeout", type=float, default=45.0, help="the server's --request-timeout"
    )
    parser.add_argument("--sample-every", type=float, default=2.0)
    parser.add_argument("--csv", type=Path, help="write the samples here")
    parser.add_argument("--plot", type=Path, help="write an SVG of the samples here")
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="slmops-soak-model-") as folder:
        config = SoakConfig(
            model=tiny_gguf(Path(folder)) if args.tiny else args.model,
            embedder=None if args.no_embedder else args.embedder,
            duration_s=60.0 if args.short else args.duration,
            clients=args.clients,
            max_queue=args.max_queue,
            max_tokens=args.max_tokens,
            hang_after_s=args.hang_after,
            request_timeout_s=args.request_timeout,
            sample_every_s=args.sample_every,
        )
        report = run_soak(config)
    rows = report.summary()
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.csv:
        write_csv(report, args.csv)
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        args.plot.write_text(plot_svg(report))
    if args.json:
        args.json.write_text(json.dumps(dict(rows), indent=2) + "\n")
    clean = (
        not report.hung
        and report.server_errors() == 0
        and report.probe_s is not None
        and report.exit_code in (0, -signal.SIGTERM)
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
