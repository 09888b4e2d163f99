"""The README's evaluation walk-through, command by command, as a new user types it: the
quickstart, a synthesised test set, a run, its report, a prompt change, a second run, and the
comparison that names the change."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.test_cli import slmops

EDIT = (
    "Answer in one or two sentences, using only the passages above.",
    "Copy the one sentence from the passages above that answers the question.",
)


def run_id(stdout: str) -> str:
    found = re.search(r"Eval run ([0-9a-f]{12}): handbook-rag on handbook-synth", stdout)
    assert found, stdout
    return found.group(1)


@pytest.mark.model
def test_synthesise_run_report_change_the_prompt_and_compare(tmp_path: Path) -> None:
    home, project = tmp_path / ".slmops", tmp_path
    started = slmops("quickstart", home=home, cwd=project)
    assert started.returncode == 0, started.stderr

    synth = slmops("eval", "synth", "handbook", "--n", "4", home=home, cwd=project)
    assert "handbook-synth@1 committed" in synth.stdout, synth.stderr

    first = slmops("eval", "run", "handbook-rag", "-d", "handbook-synth", home=home, cwd=project)
    assert first.returncode == 0, first.stderr
    baseline = run_id(first.stdout)
    report = project / "report.html"
    shown = slmops("eval", "report", baseline, "--html", str(report), home=home, cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert f"Eval run {baseline}: handbook-rag on handbook-synth@1" in report.read_text()

    exported = slmops("prompt", "export", "handbook-rag-answer", "prompts", home=home, cwd=project)
    assert exported.returncode == 0, exported.stderr
    template = project / "prompts" / "handbook-rag-answer.j2"
    assert EDIT[0] in template.read_text()  # the rag template's instruction, as shipped
    template.write_text(template.read_text().replace(*EDIT))
    added = slmops(
        "prompt",
        "add",
        "handbook-rag-answer",
        "prompts/handbook-rag-answer.j2",
        "--system",
        "prompts/handbook-rag-answer.system.j2",
        "-m",
        "quote the answering sentence",
        home=home,
        cwd=project,
    )
    assert "handbook-rag-answer@2 stored" in added.stdout, added.stderr

    second = slmops("eval", "run", "handbook-rag", "-d", "handbook-synth", home=home, cwd=project)
    assert second.returncode == 0, second.stderr
    candidate = run_id(second.stdout)
    compared = slmops("eval", "compare", baseline, candidate, home=home, cwd=project)
    assert compared.returncode == 0, compared.stderr
    change = "prompt answer: handbook-rag-answer@1 -> handbook-rag-answer@2"
    assert f"Changed: {change}" in compared.stdout
    assert "token_f1" in compared.stdout and "95% interval" in compared.stdout
    both = project / "compare.html"
    slmops("eval", "report", candidate, "--compare", baseline, "--html", str(both), home=home)
    page = both.read_text()
    assert f"Comparison with {baseline}" in page and change.replace(">", "&gt;") in page
