"""``slmops review STACK``: review a sample of live answers in the terminal.

Each sampled trace is shown as a panel (question, answer, sources, support and relevance,
the model version, the span tree) and the reviewer answers with one key: good, bad, a
correction, labels, skip or quit. Reviews are stored as feedback with source ``reviewer``;
reviewed traces leave the queue, so running the same command again continues the sample.
Keys are read as lines from stdin, so a terminal, tmux or a pipe can drive it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from slmops.cli.choices import FEEDBACK_KINDS
from slmops.cli.common import WorkspaceOption, console, open_workspace, when
from slmops.cli.trace import _span_label  # private, but the one way a span is rendered
from slmops.errors import SlmopsError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from slmops.monitor.records import TraceRecord
    from slmops.monitor.review import Verdict

app = typer.Typer(
    help="Review a sample of live answers: label, correct or approve them.",
    add_completion=False,
)

KEYS = "[g]ood  [b]ad  [c]orrect  [l]abel  [s]kip  [q]uit"
_VALID = "type one of g, b, c, l, s, q (good, bad, correct, label, skip, quit)"
Outcome = Literal["reviewed", "skipped", "quit"]


class _InputEndedError(Exception):
    """The reviewer ended input (end of file or Ctrl-C) in the middle of a prompt."""


def _ask(prompt: str) -> str:
    try:
        return console.input(Text(prompt, style="bold"))
    except (EOFError, KeyboardInterrupt):
        console.print()
        raise _InputEndedError from None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def span_tree(record: TraceRecord) -> Tree:
    """The trace's spans as ``slmops trace show`` draws them, without inputs and outputs."""
    status = "[green]ok[/]" if record.status == "ok" else "[red]error[/]"
    tree = Tree(f"{status} {record.latency_ms:.1f} ms, {len(record.spans)} spans")
    nodes: dict[str | None, Tree] = {}
    for span in record.spans:  # ordered by start: parents come before their children
        parent = nodes.get(span["parent_id"], tree)
        nodes[span["span_id"]] = parent.add(_span_label(span, False))
    return tree


def review_panel(record: TraceRecord, position: int, total: int) -> Panel:
    """One trace as the reviewer sees it: question, answer, sources, signals, spans."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column()
    answer = Text()
    if record.refused:
        answer.append("REFUSED", style="bold red")
        if record.refusal_reason:
            answer.append(f" ({record.refusal_reason})", style="red")
        answer.append("\n")
    answer.append(record.answer or "(empty)")
    sources = list(dict.fromkeys(record.sources))
    signals = (
        f"support {_fmt(record.support)}  relevance {_fmt(record.relevance)}  "
        f"model {record.answered_by or '-'}  {record.latency_ms:.0f} ms  "
        f"{record.prompt_tokens}+{record.completion_tokens} tokens"
    )
    grid.add_row("Question", Text(record.question or "(empty)"))
    grid.add_row("Answer", answer)
    grid.add_row("Sources", Text("; ".join(sources) if sources else "none"))
    grid.add_row("Signals", Text(signals))
    grid.add_row("Spans", span_tree(record))
    return Panel(
        grid,
        title=f"[bold]{position}/{total}[/] {escape(record.stack)} · {when(record.started_at)}",
        subtitle=f"trace {record.trace_id}",
        title_align="left",
    )


def _verdict() -> Verdict:
    while True:
        key = _ask("[g]ood or [b]ad? ").strip().lower()
        if key in ("g", "good"):
            return "good"
        if key in ("b", "bad"):
            return "bad"
        console.print("[yellow]type g (good) or b (bad)[/]")


def _labels() -> list[str] | None:
    from slmops.monitor.feedback import FeedbackError
    from slmops.monitor.review import parse_labels

    while True:
        text = _ask("Labels, comma-separated (empty cancels): ")
        if not text.strip():
            return None
        try:
            return parse_labels(text)
        except FeedbackError as exc:
            console.print(Text(str(exc), style="red"))


def review_one(
    engine: Engine,
    record: TraceRecord,
    *,
    reviewer: str | None,
    redact: Callable[[str], str] | None,
) -> Outcome:
    """Ask for one key until a review is stored, the trace skipped or the session quit."""
    from slmops.monitor.feedback import FeedbackError
    from slmops.monitor.review import record_review

    while True:
        key = _ask(KEYS + "  ").strip().lower()
        verdict: Verdict | None = None
        correction: str | None = None
        labels: list[str] = []
        if key in ("g", "good"):
            verdict = "good"
        elif key in ("b", "bad"):
            verdict = "bad"
        elif key in ("c", "correct"):
            correction = _ask("Corrected answer (one line; empty cancels): ").strip()
            if not correction:
                console.print("[dim]cancelled[/]")
                continue
            verdict = "bad"
        elif key in ("l", "label"):
            chosen = _labels()
            if chosen is None:
                console.print("[dim]cancelled[/]")
                continue
            labels, verdict = chosen, _verdict()
        elif key in ("s", "skip"):
            return "skipped"
        elif key in ("q", "quit"):
            return "quit"
        else:
            console.print(f"[yellow]{_VALID}[/]")
            continue
        try:
            record_review(
                engine,
                record.trace_id,
                verdict=verdict,
                correction=correction,
                labels=labels,
                comment=None,
                reviewer=reviewer,
                redact=redact,
            )
        except FeedbackError as exc:  # a correction too long, say: say so and ask again
            console.print(Text(str(exc), style="red"))
            continue
        done = Text.assemble(("recorded: ", "green"), str(verdict))
        if labels:
            done.append(f" ({', '.join(labels)})")
        console.print(done)
        return "reviewed"


def _ago(text: str | None, option: str, now: float) -> float | None:
    from slmops.monitor.alerts import parse_duration

    if text is None:
        return None
    try:
        return now - parse_duration(text)
    except SlmopsError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


@app.command("review")
def review_command(
    stack: str = typer.Argument(..., help="The stack whose answers to review."),
    sample: int = typer.Option(20, "--sample", "-n", min=1, help="How many traces to sample."),
    since: str | None = typer.Option(
        None,
        "--since",
        metavar="DURATION",
        help="Only traces from the last DURATION (30m, 24h, 7d).",
    ),
    until: str | None = typer.Option(
        None, "--until", metavar="DURATION", help="Only traces older than DURATION (30m, 24h, 7d)."
    ),
    feedback: list[str] = typer.Option(
        [],
        "--feedback",
        "-f",
        help=f"Only traces with feedback of this kind ({', '.join(FEEDBACK_KINDS)}), not counting "
        "this queue's own reviews; repeatable.",
    ),
    max_support: float | None = typer.Option(
        None, "--max-support", help="Only answers whose support (cite step) is at most this."
    ),
    max_relevance: float | None = typer.Option(
        None, "--max-relevance", help="Only answers whose best passage relevance is at most this."
    ),
    refused: bool | None = typer.Option(
        None, "--refused/--answered", help="Only refusals, or only answers.", show_default=False
    ),
    worst_first: bool = typer.Option(
        False, "--worst-first", help="Sample the lowest support (then relevance) first."
    ),
    reviewer: str | None = typer.Option(
        None,
        "--reviewer",
        help="Your name, stored with each review; the queue then leaves out only your reviews.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample: same seed, same sample."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Review a sample of a stack's answers, one key each; rerun to continue."""
    from slmops.monitor.feedback import FeedbackError, parse_kinds
    from slmops.monitor.records import load_records
    from slmops.monitor.review import review_queue, reviewed_traces
    from slmops.store.redaction import Redactor

    now = time.time()
    try:
        kinds = parse_kinds(feedback)
    except FeedbackError as exc:
        raise typer.BadParameter(str(exc), param_hint="--feedback") from None
    started, ended = _ago(since, "--since", now), _ago(until, "--until", now)
    with open_workspace(workspace) as ws:
        engine = ws.engine
        sampled = review_queue(
            engine,
            stack,
            sample=sample,
            since=started,
            until=ended,
            feedback=kinds,
            max_support=max_support,
            max_relevance=max_relevance,
            refused=refused,
            reviewer=reviewer,
            seed=seed,
            order="worst" if worst_first else "random",
            include_reviewed=True,
        )
        if not sampled:
            console.print(
                f"No traces of stack {stack!r} to review: none succeeded with these filters "
                "(see 'slmops trace list').",
                markup=False,
            )
            return
        done = reviewed_traces(engine, sampled, reviewer)
        todo = [t for t in sampled if t not in done]
        if not todo:
            console.print(
                f"All {len(sampled)} sampled traces of {stack!r} are reviewed; a larger "
                "--sample or another --seed gives more.",
                markup=False,
            )
            return
        console.print(
            f"{len(todo)} trace(s) of {stack!r} to review"
            + (f" ({len(done)} of this sample already reviewed)." if done else "."),
            markup=False,
        )
        redactor = Redactor.from_settings(ws.settings.redact, ws.settings.redact_patterns)
        redact = redactor.redact if redactor else None
        reviewed = gone = 0
        for position, trace_id in enumerate(todo, start=1):
            records = load_records(engine, [trace_id])
            if not records or reviewed_traces(engine, [trace_id], reviewer):
                gone += 1  # deleted by retention, or reviewed meanwhile by someone else
                continue
            console.print(review_panel(records[0], position, len(todo)))
            try:
                outcome = review_one(engine, records[0], reviewer=reviewer, redact=redact)
            except _InputEndedError:
                outcome = "quit"
            if outcome == "quit":
                break
            reviewed += outcome == "reviewed"
    remaining = len(todo) - reviewed - gone
    if remaining:
        console.print(f"{reviewed} reviewed, {remaining} left; run the same command to continue.")
    else:
        console.print(f"{reviewed} reviewed, 0 left: this sample is done.")
