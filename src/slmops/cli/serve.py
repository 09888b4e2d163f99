"""``slmops serve``: the OpenAI-compatible server."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from slmops.cli.common import WorkspaceOption, open_workspace
from slmops.errors import ConfigError

log = logging.getLogger("slmops.serve")


def serve_command(
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 exposes it)."),
    port: int = typer.Option(8000, help="Port."),
    model: list[str] = typer.Option([], "--model", "-m", help="Chat model URI to serve."),
    stack: list[str] = typer.Option([], "--stack", "-s", help="App stack to serve as stack:NAME."),
    embedder: list[str] = typer.Option([], "--embedder", "-e", help="Embedder URI to serve."),
    api_key: list[str] = typer.Option(
        [], "--api-key", envvar="SLMOPS_API_KEY", help="Accepted API key (repeatable)."
    ),
    keys_file: Path | None = typer.Option(None, help="File of API keys, one per line."),
    max_queue: int = typer.Option(32, help="Requests that may wait for the model; then 429."),
    parallel: int | None = typer.Option(
        None,
        min=1,
        max=64,
        help="Generations a local GGUF model decodes together (its llama.cpp slots); "
        "default: $SLMOPS_LLAMA_SLOTS or 4.",
    ),
    threads: int | None = typer.Option(
        None,
        min=1,
        max=512,
        help="Compute threads of a local GGUF model; default: $SLMOPS_LLAMA_THREADS or one "
        "per core. Fewer than the cores leave room for other heavy work on the machine.",
    ),
    prefix_reuse: bool = typer.Option(
        True,
        "--prefix-reuse/--no-prefix-reuse",
        help="Reuse the KV cache of a prompt's shared prefix (answers stay the same).",
    ),
    max_body_bytes: int = typer.Option(1_000_000, help="Largest request body accepted."),
    header_timeout: float = typer.Option(
        10.0,
        help="Seconds a request's headers may take to arrive; then 408 and the connection "
        "closes (slow clients holding connections).",
    ),
    request_timeout: float = typer.Option(
        300.0,
        help="Seconds a chat or completion request may take, waiting in line included; then "
        "429 (still in line) or 504 (generation stopped). 0: no limit.",
    ),
    max_tokens: int = typer.Option(2048, help="Largest max_tokens a request may ask for."),
    cors_origin: list[str] = typer.Option([], help="Allow browser calls from this origin."),
    canary: str | None = typer.Option(
        None, help="registry:NAME@ALIAS=PERCENT: that share of the model's requests go to it."
    ),
    shadow: str | None = typer.Option(
        None, help="registry:NAME@ALIAS: it answers each request too, into the traces only."
    ),
    follow_interval: float = typer.Option(
        1.0, help="Seconds between checks of followed registry aliases."
    ),
    monitor_share: float = typer.Option(
        0.1, help="Share of stack answers scored online in the background (0 turns it off)."
    ),
    monitor_interval: float = typer.Option(
        30.0, help="Seconds between refreshes of monitored figures and alert evaluations."
    ),
    monitor: bool = typer.Option(
        True, "--monitor/--no-monitor", help="Online scoring, monitored gauges and alerts."
    ),
    ui: bool = typer.Option(False, "--ui", help="Also serve the web console at /ui/."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Serve models and app stacks over the OpenAI API (chat, completions, embeddings), with
    POST /v1/feedback and the monitor."""
    import uvicorn

    from slmops.core.runtime import Runtime
    from slmops.serve.app import ServeConfig, create_app
    from slmops.serve.following import parse_canary, parse_shadow
    from slmops.serve.logs import configure_json_logging
    from slmops.serve.monitoring import MonitorConfig
    from slmops.serve.server import build_catalog, read_keys_file, uvicorn_config
    from slmops.ui import create_console

    if not (model or stack or embedder):
        model, embedder = ["local:smollm2-135m"], ["local:all-minilm-l6-v2"]
    keys = [*api_key, *(read_keys_file(keys_file) if keys_file else [])]
    if host not in ("127.0.0.1", "localhost", "::1") and not keys:
        raise ConfigError(f"refusing to serve on {host} without an API key (--api-key/--keys-file)")
    if max_queue < 0 or max_body_bytes < 1 or max_tokens < 1:
        raise ConfigError("--max-queue must be >= 0, --max-body-bytes and --max-tokens >= 1")
    if follow_interval <= 0:
        raise ConfigError("--follow-interval must be above 0 seconds")
    if not header_timeout > 0:
        raise ConfigError("--header-timeout must be above 0 seconds")
    if not request_timeout >= 0:  # (also refuses NaN)
        raise ConfigError("--request-timeout must be 0 (no limit) or above")
    if not 0 <= monitor_share <= 1 or monitor_interval <= 0:
        raise ConfigError("--monitor-share must be within 0-1 and --monitor-interval above 0")
    if ui and cors_origin and not keys:
        raise ConfigError("--ui with --cors-origin needs an API key: other sites could read it")
    challenger = parse_canary(canary) if canary else None
    shadowing = parse_shadow(shadow) if shadow else None
    # The engine reads its layout from the environment when a model loads (build_catalog).
    if parallel is not None:
        os.environ["SLMOPS_LLAMA_SLOTS"] = str(parallel)
    if threads is not None:
        os.environ["SLMOPS_LLAMA_THREADS"] = str(threads)
    if not prefix_reuse:
        os.environ["SLMOPS_PREFIX_REUSE"] = "0"
    ws = open_workspace(workspace)
    catalog = build_catalog(
        ws,
        models=model,
        stacks=stack,
        embedders=embedder,
        challengers=[c.uri for c in (challenger, shadowing) if c is not None],
        poll_s=follow_interval,
    )
    configure_json_logging()  # from here on, stderr is JSON lines
    config = ServeConfig(
        api_keys=tuple(keys),
        max_queue=max_queue,
        local_concurrency=parallel,
        max_body_bytes=max_body_bytes,
        header_timeout_s=header_timeout,
        request_timeout_s=request_timeout or None,
        max_tokens_limit=max_tokens,
        default_max_tokens=min(256, max_tokens),
        cors_origins=tuple(cors_origin),
        canary=challenger,
        shadow=shadowing,
        monitor=MonitorConfig(share=monitor_share, interval_s=monitor_interval)
        if monitor
        else None,
    )
    app = create_app(catalog, Runtime.from_workspace(ws), config)
    if ui:  # the console, behind the same keys
        app.mount("/ui", create_console(ws, api_keys=keys, admission=app.state.local_admission))
    log.info(
        "serving", extra={"host": host, "port": port, "models": catalog.names(), "auth": bool(keys)}
    )
    uvicorn.Server(uvicorn_config(app, host, port, header_timeout_s=config.header_timeout_s)).run()
