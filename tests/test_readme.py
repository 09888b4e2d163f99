"""The README cannot drift from the code: its commands and Python examples are checked here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_readme_opens_with_the_two_setup_commands_and_ci_runs_the_test_one():
    first = code_blocks("bash")[0].strip().splitlines()
    commands = [line.split("#")[0].strip() for line in first]
    assert commands == ["make quickstart", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_makefile_targets_named_in_the_readme_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("quickstart", "test", "lint", "bench"):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target


@pytest.mark.model
def test_readme_python_examples_run(capsys):
    blocks = code_blocks("python")
    assert len(blocks) >= 3
    for index, block in enumerate(blocks):
        namespace: dict[str, object] = {"__name__": f"readme_example_{index}"}
        exec(compile(block, f"README.md python block {index + 1}", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "flowchart TD" in printed  # the graph of the support app
    assert "city=" in printed  # the structured Capital output
    assert "(2, 384)" in printed  # the embedder example
    assert "five business days. [refunds.md, lines 3-3, policies@1]" in printed  # retrieval


def test_the_command_reference_lists_every_command():
    """docs/commands.md (the README's command table, moved out) names every command."""
    import typer.main

    from slmops.cli.main import app

    reference = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    group = typer.main.get_group(app)

    def commands(prefix: str, command: object) -> list[str]:
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            return [prefix]
        return [c for name, sub in subcommands.items() for c in commands(f"{prefix} {name}", sub)]

    def listed(full: str) -> bool:
        """Named in full, or as `/ `last`` in a row of its group (`slmops eval dataset add
        NAME FILE` / `list` / ...)."""
        *parents, last = full.split()
        if f"`{full}" in reference:
            return True
        group_prefix = " ".join(parents)
        return any(
            f"`{group_prefix} " in row and f"`{last}" in row for row in reference.splitlines()
        )

    assert [full for full in commands("slmops", group) if not listed(full)] == []
