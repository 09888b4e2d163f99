"""``/prompts`` (every prompt with its latest version and tags) and ``/prompts/{name}``: its
versions, the text of one (``?v=VERSION`` or ``?v=TAG``; the latest by default) and the
unified diff between two (``?a=1&b=2``, as ``slmops prompt diff`` prints it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from slmops.errors import NotFoundError
from slmops.prompts.registry import PromptRegistry, PromptVersion

if TYPE_CHECKING:
    from slmops.ui.app import Console


@dataclass(frozen=True)
class DiffLine:
    kind: str  # file | hunk | add | del | same
    text: str


def diff_lines(diff: str) -> list[DiffLine]:
    """A unified diff's lines, each with the kind the page colours it by."""
    lines = []
    for text in diff.splitlines():
        if text.startswith(("---", "+++")):
            kind = "file"
        elif text.startswith("@@"):
            kind = "hunk"
        elif text.startswith("+"):
            kind = "add"
        elif text.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        lines.append(DiffLine(kind, text))
    return lines


@dataclass
class PromptQuery:
    """The chosen version and the two compared, each a version number or a tag."""

    shown: PromptVersion
    a: PromptVersion | None = None
    b: PromptVersion | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(
        cls, registry: PromptRegistry, name: str, params: Mapping[str, str], latest: PromptVersion
    ) -> PromptQuery:
        errors: dict[str, str] = {}

        def version(parameter: str) -> PromptVersion | None:
            selector = params.get(parameter, "").strip()
            if not selector:
                return None
            try:
                return registry.get(f"{name}@{selector}")
            except NotFoundError as exc:
                errors[parameter] = str(exc)
                return None

        shown, a, b = version("v"), version("a"), version("b")
        if (a is None) != (b is None) and not {"a", "b"} & set(errors):
            missing = "b" if b is None else "a"
            errors[missing] = "missing: a diff compares two versions, a and b"
        return cls(shown or latest, a, b, errors)


def router(console: Console) -> APIRouter:
    routes = APIRouter(dependencies=[Depends(console.auth.require_reader)])
    registry = PromptRegistry(console.workspace)

    @routes.get("/prompts", response_class=HTMLResponse)
    def prompt_list(request: Request) -> HTMLResponse:
        rows: list[dict[str, Any]] = []
        for name in registry.names():
            versions = registry.log(name)
            rows.append(
                {"latest": versions[0], "count": len(versions), "tags": registry.tags(name)}
            )
        return console.render(request, "prompts.html", title="Prompts", prompts=rows)

    @routes.get("/prompts/{name}", response_class=HTMLResponse)
    def prompt_page(request: Request, name: str) -> HTMLResponse:
        versions = registry.log(name)  # 404 when unknown
        tags = registry.tags(name)
        by_version: dict[int, list[str]] = {}
        for tag, number in sorted(tags.items()):
            by_version.setdefault(number, []).append(tag)
        query = PromptQuery.parse(registry, name, request.query_params, versions[0])
        diff: list[DiffLine] | None = None
        if query.a is not None and query.b is not None:
            diff = diff_lines(registry.diff(name, query.a.version, query.b.version))
        return console.render(
            request,
            "prompt.html",
            status_code=400 if query.errors else 200,
            title=f"Prompt · {name}",
            name=name,
            versions=versions,
            tags=by_version,
            query=query,
            diff=diff,
        )

    return routes
