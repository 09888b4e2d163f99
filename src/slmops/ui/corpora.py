"""``/data`` (every corpus with its embedder, versions and checked-out version) and
``/data/{corpus}``: its versions, the documents that differ between two of them
(``?a=1&b=2``, as ``slmops data diff`` shows them) and a search box
(``?q=...&mode=hybrid|vector|text&k=5``, optionally ``&v=VERSION``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from slmops.data.corpus import Corpora, CorpusDiff, CorpusVersion, Hit, SearchMode, corpora_for
from slmops.errors import SlmopsError

if TYPE_CHECKING:
    from slmops.ui.app import Console

MODES: dict[str, SearchMode] = {"hybrid": "hybrid", "vector": "vector", "text": "fts"}
MAX_K = 50


@dataclass
class CorpusQuery:
    """The page's query string, checked: each problem is named by its parameter."""

    a: int | None = None
    b: int | None = None
    q: str = ""
    mode: str = "hybrid"
    k: int = 5
    v: int | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, params: Mapping[str, str], versions: list[CorpusVersion]) -> CorpusQuery:
        query = cls(q=params.get("q", "").strip())
        known = {version.version for version in versions}
        newest = versions[0].version if versions else 0

        def version(name: str) -> int | None:
            text = params.get(name, "").strip()
            if not text:
                return None
            if not text.isdigit() or int(text) not in known:
                query.errors[name] = f"not a version of this corpus (versions 1-{newest})"
                return None
            return int(text)

        query.a, query.b, query.v = version("a"), version("b"), version("v")
        if (query.a is None) != (query.b is None) and not {"a", "b"} & set(query.errors):
            missing = "b" if query.b is None else "a"
            query.errors[missing] = "missing: a diff compares two versions, a and b"
        mode = params.get("mode", "").strip() or "hybrid"
        if mode == "fts":
            mode = "text"  # the CLI's name for it
        if mode not in MODES:
            query.errors["mode"] = f"use one of {', '.join(MODES)}"
        else:
            query.mode = mode
        k = params.get("k", "").strip()
        if k:
            if not k.isdigit() or not 1 <= int(k) <= MAX_K:
                query.errors["k"] = f"use a whole number from 1 to {MAX_K}"
            else:
                query.k = int(k)
        return query


def corpus_rows(corpora: Corpora) -> list[dict[str, Any]]:
    """A row per corpus, as ``slmops data list`` shows them."""
    rows = []
    for name in corpora.names():
        info, log = corpora.info(name), corpora.log(name)
        latest = log[0] if log else None
        rows.append(
            {
                "name": name,
                "embedder": info["embedder"],
                "versions": len(log),
                "latest": latest,
                "checked_out": info["checked_out"],
                "tags": corpora.tags(name),
            }
        )
    return rows


def router(console: Console) -> APIRouter:
    routes = APIRouter(dependencies=[Depends(console.auth.require_reader)])

    @routes.get("/data", response_class=HTMLResponse)
    def corpus_list(request: Request) -> HTMLResponse:
        rows = corpus_rows(corpora_for(console.workspace))
        return console.render(request, "data.html", title="Data", corpora=rows)

    @routes.get("/data/{corpus}", response_class=HTMLResponse)
    def corpus_page(request: Request, corpus: str) -> HTMLResponse:
        corpora = corpora_for(console.workspace)
        info = corpora.info(corpus)  # 404 when unknown
        versions = corpora.log(corpus)
        tags = corpora.tags(corpus)
        by_version: dict[int, list[str]] = {}
        for tag, number in sorted(tags.items()):
            by_version.setdefault(number, []).append(tag)
        query = CorpusQuery.parse(request.query_params, versions)
        diff: CorpusDiff | None = None
        if query.a is not None and query.b is not None:
            diff = corpora.diff(corpus, query.a, query.b)
        searched: CorpusVersion | None = None
        hits: list[Hit] = []
        if query.q and not {"mode", "k", "v"} & set(query.errors):
            ref = f"{corpus}@{query.v}" if query.v is not None else corpus
            try:
                searched, hits = corpora.search(ref, query.q, k=query.k, mode=MODES[query.mode])
            except SlmopsError as exc:
                query.errors["q"] = str(exc)
        return console.render(
            request,
            "data_corpus.html",
            status_code=400 if query.errors else 200,
            title=f"Data · {corpus}",
            corpus=corpus,
            info=info,
            versions=versions,
            tags=by_version,
            query=query,
            modes=list(MODES),
            diff=diff,
            searched=searched,
            hits=hits,
        )

    return routes
