"""``/``: what the workspace holds, with links to every page."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from slmops.monitor.alerts import list_rules
from slmops.store.traces import count_traces
from slmops.ui.trace_search import TraceFilter, search_traces, traffic_by_stack

if TYPE_CHECKING:
    from slmops.ui.app import Console

ACTIVE_WINDOW_S = 24 * 3600.0


def router(console: Console) -> APIRouter:
    routes = APIRouter(dependencies=[Depends(console.auth.require_reader)])

    @routes.get("/", response_class=HTMLResponse)
    def home(request: Request) -> HTMLResponse:
        engine = console.workspace.engine
        now = time.time()
        rules = list_rules(engine)
        return console.render(
            request,
            "home.html",
            title="Overview",
            workspace=str(console.workspace.home),
            trace_count=count_traces(engine),
            traffic=traffic_by_stack(engine, since=now - ACTIVE_WINDOW_S),
            rules=rules,
            firing=[rule for rule in rules if rule["state"] == "firing"],
            recent=search_traces(engine, TraceFilter(), now=now, limit=8).rows,
        )

    return routes
