"""``slmops quickstart``: the main job on the shipped defaults, a sourced answer from RAG.

It ingests the handbook bundled with slmops into corpus ``handbook`` (incremental: a re-run
embeds nothing), writes the ``handbook-rag`` stack from the rag template into the
workspace's ``stacks/`` folder the first time, and asks it a question.
"""

from __future__ import annotations

from pathlib import Path

import typer

from slmops.cli.choices import DEFAULT_MODEL
from slmops.cli.common import WorkspaceOption, console, open_workspace
from slmops.cli.stacks import ensure_stack, print_output, print_versions

QUICKSTART_QUESTION = "How do I version a prompt?"
QUICKSTART_CORPUS = "handbook"
QUICKSTART_STACK = "handbook-rag"


def quickstart_command(
    question: str = typer.Argument(QUICKSTART_QUESTION, help="A question about slmops."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Chat model URI instead of the shipped SmolLM2-135M."
    ),
    answer: str | None = typer.Option(
        None,
        "--answer",
        help="Answer mode: extractive (the stack's default), hybrid or generative (the model "
        "writes the answer).",
    ),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Build the RAG quickstart on the shipped models and answer a question about the
    bundled slmops handbook, with sources, versions and the trace id."""
    from slmops.apps.build import build_stack
    from slmops.apps.quickstart import bundled_docs
    from slmops.core.runtime import Runtime, use_runtime
    from slmops.data.corpus import corpora_for
    from slmops.models.loading import load_embedder

    with open_workspace(workspace) as ws:
        with console.status("Loading the embedder and ingesting the bundled handbook..."):
            load_embedder(ws.settings.embedder)
            report = corpora_for(ws).ingest(
                QUICKSTART_CORPUS, [bundled_docs()], message="bundled slmops handbook"
            )
        current = corpora_for(ws).resolve(QUICKSTART_CORPUS)
        console.print(
            f"Corpus [bold]{QUICKSTART_CORPUS}@{current.version}[/]: {report.documents} "
            f"documents, {report.chunks} chunks ({report.embedded} embedded now)"
        )
        ensure_stack(ws, QUICKSTART_STACK, "rag", corpus=QUICKSTART_CORPUS, model=DEFAULT_MODEL)
        stack = build_stack(
            QUICKSTART_STACK,
            ws,
            models={"chat": model} if model else None,
            settings={"answer": answer} if answer else None,
        )
        mode = stack.manifest.manifest.settings.get("answer")
        if model and not answer and mode == "extractive":
            console.print(
                "[yellow]note:[/] the extractive mode answers without the model; add "
                "--answer hybrid or --answer generative to have it write the answer"
            )
        runtime = Runtime.from_workspace(ws)
        with console.status("Loading the model and answering..."), use_runtime(runtime):
            result = stack.invoke(question)
    print_output(result.output, question)
    print_versions(stack)
    console.print(f"Trace id: [bold]{result.trace_id}[/]  ({result.duration_ms:.0f} ms)")
    console.print(f"See it with: slmops trace show {result.trace_id[:12]}")
    console.print(
        f"Next: slmops chat {QUICKSTART_STACK}   ·   slmops stack graph {QUICKSTART_STACK}"
    )
