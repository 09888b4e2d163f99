"""``slmops batch STACK INPUT -o OUTPUT``: batch inference over a JSONL file, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from slmops.cli.common import (
    AddressOption,
    ExecutorOption,
    WorkspaceOption,
    check_executor,
    console,
    open_workspace,
)


def batch_command(
    stack: str = typer.Argument(..., help="Stack name or folder."),
    source: Path = typer.Argument(..., help='JSONL: {"id": ..., "input": ...} or inputs.'),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL results (appended)."),
    executor: str = ExecutorOption,
    address: str | None = AddressOption,
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Run a stack over every record of a JSONL file, writing one result line per record
    as it finishes. Run it again after a crash or Ctrl-C: records already in OUTPUT are
    skipped. With --executor ray the records are answered by actors across a cluster."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from slmops.apps.batch import finished_ids, read_records, run_batch, run_locally
    from slmops.apps.build import build_stack
    from slmops.core.runtime import Runtime, use_runtime

    check_executor(executor)
    records = read_records(source)
    done = finished_ids(output)
    pending = [record for record in records if record.id not in done]
    if not pending:
        console.print(f"All {len(records)} records are in {output} already.")
        return
    if done:
        console.print(f"Resuming: {len(done)} of {len(records)} records are in {output}")
    errors = 0

    def counted(line: dict[str, Any]) -> None:
        nonlocal errors
        errors += "error" in line
        bar.update(task, advance=1)

    bar = Progress(
        TextColumn("batch {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with open_workspace(workspace) as ws:
        built = build_stack(stack, ws)
        task = bar.add_task(built.stack_name, total=len(pending))
        with bar:
            if executor == "ray":
                from slmops.pipelines.ray_executor import batch_results

                results = batch_results(
                    home=str(ws.home),
                    stack=str(built.manifest.path),
                    records=pending,
                    address=address,
                )
                written = run_batch(results, output, on_result=counted)
            else:
                with use_runtime(Runtime.from_workspace(ws)):
                    written = run_batch(run_locally(built, pending), output, on_result=counted)
    failed = f", {errors} failed (their error is in the line)" if errors else ""
    console.print(f"[green]{written} records answered[/] into {output}{failed}")
