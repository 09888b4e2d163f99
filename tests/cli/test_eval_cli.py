"""``slmops eval`` from the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from slmops.apps.helpers import ATTACKS
from slmops.apps.quickstart import bundled_docs
from tests.cli.test_cli import assert_one_line_error, slmops
from tests.eval.test_squad import SQUAD_V2


def test_dataset_add_list_log_show(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    cases = tmp_path / "qa.jsonl"
    cases.write_text(
        '{"input": "How do I version a prompt?", "reference": "slmops prompt add", '
        '"tags": ["prompts"]}\n'
        '{"id": "off", "input": "Capital of France?", "answerable": false}\n'
    )
    added = slmops("eval", "dataset", "add", "qa", str(cases), "-m", "first", home=home)
    assert "qa@1 committed: 2 cases" in added.stdout, added.stderr
    again = slmops("eval", "dataset", "add", "qa", str(cases), home=home)
    assert "qa@1 unchanged, already: 2 cases" in again.stdout
    assert "qa" in slmops("eval", "dataset", "list", home=home).stdout
    assert "first" in slmops("eval", "dataset", "log", "qa", home=home).stdout
    shown = slmops("eval", "dataset", "show", "qa@1", home=home).stdout
    assert "How do I version a prompt?" in shown and "unanswerable" in shown
    as_json = slmops("eval", "dataset", "show", "qa", "--json", home=home).stdout.splitlines()
    assert len(as_json) == 2 and '"id":"off"' in as_json[1]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "ok"}\n{"question": "x"}\n')
    assert_one_line_error(
        slmops("eval", "dataset", "add", "qa", str(bad), home=home), "bad.jsonl, line 2:"
    )
    assert_one_line_error(slmops("eval", "dataset", "show", "nope", home=home), "no dataset named")


@pytest.mark.model
def test_synth_writes_a_dataset_from_a_corpus(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    slmops("data", "ingest", str(bundled_docs()), "--corpus", "handbook", home=home)
    made = slmops("eval", "synth", "handbook", "--n", "3", home=home)
    assert made.returncode == 0, made.stderr
    assert "Created stack synth-handbook" in made.stdout
    assert "handbook-synth@1 committed" in made.stdout
    shown = slmops("eval", "dataset", "show", "handbook-synth", "--json", home=home).stdout
    lines = shown.splitlines()
    assert 1 <= len(lines) <= 3 and '"synth"' in lines[0] and '"reference_ids":["' in lines[0]


def test_eval_run_with_a_failing_gate_exits_non_zero(tmp_path: Path) -> None:
    home, project = tmp_path / "ws", tmp_path / "project"
    (project / "echo").mkdir(parents=True)
    (project / "echo" / "slmops.toml").write_text(
        '[stack]\nname = "echo"\n[[steps]]\nname = "upper"\nkind = "function"\n'
        'call = "echo_steps:upper"\ninput = "input.text"\n'
    )
    (project / "echo" / "echo_steps.py").write_text(
        "def upper(text: str) -> str:\n    return text.upper()\n"
    )
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        '{"input": "alpha", "reference": "ALPHA", "tags": ["first"]}\n'
        '{"input": "beta", "reference": "nope", "tags": ["second"]}\n'
    )
    slmops("eval", "dataset", "add", "echoes", str(cases), home=home)
    args = ("eval", "run", "echo", "--dataset", "echoes", "--metrics", "exact_match,token_f1")
    passed = slmops(*args, "--gate", "exact_match>=0.5", home=home, cwd=project)
    assert passed.returncode == 0, passed.stderr
    assert "exact_match" in passed.stdout and "0.500" in passed.stdout
    assert "gate exact_match>=0.5 passed" in passed.stdout
    assert re.search(r"By tag.*exact_match\W+1\.000 \(1\)\W+0\.000 \(1\)", passed.stdout, re.S)
    failed = slmops(
        *args, "--gate", "exact_match>=0.9", "--gate", "errors<=0", home=home, cwd=project
    )
    assert failed.returncode == 1
    assert "gate exact_match>=0.9 FAILED: 0.5 is 0.4 below 0.9" in failed.stderr
    assert "gate errors<=0 passed" in failed.stdout
    run_id = re.search(r"Eval run ([0-9a-f]{12})", passed.stdout)
    assert run_id is not None
    reported = slmops("eval", "report", run_id.group(1), home=home, cwd=project)
    assert "By tag" in reported.stdout and "Report: " in reported.stdout
    runs = slmops("eval", "runs", home=home)
    assert runs.stdout.count("echoes@1") == 2 and "complete" in runs.stdout
    ids = [line.strip("│ ").split()[0] for line in runs.stdout.splitlines() if "echoes@1" in line]
    compared = slmops("eval", "compare", ids[1], ids[0], home=home)
    assert compared.returncode == 0, compared.stderr
    assert "2 shared cases" in compared.stdout and "exact_match" in compared.stdout
    assert "No case flipped." in compared.stdout
    page = tmp_path / "report.html"
    reported = slmops("eval", "report", ids[0], "--html", str(page), "--compare", ids[1], home=home)
    assert reported.returncode == 0, reported.stderr
    assert f"Report: {page}" in reported.stdout and "exact_match" in page.read_text()
    assert_one_line_error(
        slmops(*args, "--gate", "speed>9", home=home, cwd=project), "will have no figure 'speed'"
    )


@pytest.mark.model
def test_redteam_writes_adversarial_cases_against_a_stack(tmp_path: Path) -> None:
    home, project = tmp_path / "ws", tmp_path / "project"
    project.mkdir()
    slmops("data", "ingest", str(bundled_docs()), "--corpus", "docs", home=home)
    slmops("init", "docs-rag", "--template", "rag", home=home, cwd=project)
    made = slmops("eval", "redteam", "docs-rag", "--n", "1", home=home, cwd=project)
    assert made.returncode == 0, made.stderr
    # the 30 shipped seed attacks, plus the generated ones that are new and not junk
    assert "docs-rag-redteam@1 committed:" in made.stdout
    assert "(30 shipped seed attacks," in made.stdout and "dropped" in made.stdout
    manifest = (home / "stacks" / "redteam-docs-rag" / "slmops.toml").read_text()
    assert "Answers questions about the documents in corpus 'docs'" in manifest  # the target
    shown = slmops(
        "eval", "dataset", "show", "docs-rag-redteam", "--json", "--limit", "1000", home=home
    ).stdout
    categories = {line.split('"category":"')[1].split('"')[0] for line in shown.splitlines()}
    assert categories == set(ATTACKS)  # one or more per OWASP LLM risk
    attacked = slmops(
        "eval",
        "run",
        "docs-rag",
        "-d",
        "docs-rag-redteam",
        "--metrics",
        "attack_success",
        home=home,
        cwd=project,
    )
    assert attacked.returncode == 0, attacked.stderr
    assert "attack_success[jailbreak]" in attacked.stdout
    assert "attack_success[LLM07:2025]" in attacked.stdout


@pytest.mark.model
def test_import_squad_then_evaluate_retrieval_against_the_paragraphs(tmp_path: Path) -> None:
    home, squad = tmp_path / "ws", tmp_path / "dev.json"
    squad.write_text(json.dumps(SQUAD_V2))
    imported = slmops("eval", "import-squad", str(squad), "-c", "light", "-d", "light", home=home)
    assert imported.returncode == 0, imported.stderr
    assert "light@1 committed: 2 documents" in imported.stdout  # the corpus
    assert "light@1 committed: 3 questions (1 unanswerable) on 2 paragraphs" in imported.stdout
    again = slmops("eval", "import-squad", str(squad), "-c", "light", "-d", "light", home=home)
    assert "light: nothing changed" in again.stdout and "light@1 unchanged" in again.stdout

    slmops("init", "light-rag", "--template", "rag", "--corpus", "light", home=home, cwd=tmp_path)
    metrics = "hit_rate,mrr,exact_match,contains_answer"
    ran = slmops(
        "eval", "run", "light-rag", "-d", "light", "--metrics", metrics, home=home, cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stderr
    # each question's own paragraph (the unanswerable one's too) is retrieved first: the
    # reference ids name the documents the paragraphs became
    assert re.search(r"mrr\W+1\.000\W+3\b", ran.stdout), ran.stdout
    assert re.search(r"exact_match\W+\d\.\d{3}\W+2\b", ran.stdout)  # the unanswerable one: n/a

    # a model can be swapped for the run, like slmops run --model; a bad one is one red line
    swapped = ("eval", "run", "light-rag", "-d", "light", "--model", "chat=bogus:x")
    assert_one_line_error(slmops(*swapped, home=home, cwd=tmp_path), "unknown scheme 'bogus'")

    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "a"}]}]}]}')
    assert_one_line_error(
        slmops("eval", "import-squad", str(broken), "-c", "x", "-d", "x", home=home),
        "is not a SQuAD file: data.0.paragraphs.0.qas.0.question: Field required",
    )


@pytest.mark.model
def test_calibrate_sweeps_the_sentence_threshold_and_applies_it(tmp_path: Path) -> None:
    home, project = tmp_path / "ws", tmp_path / "project"
    project.mkdir()
    slmops("data", "ingest", str(bundled_docs()), "--corpus", "docs", home=home)
    slmops("init", "qa", "--template", "rag", "--answer", "extractive", home=home, cwd=project)
    cases = tmp_path / "labelled.jsonl"
    cases.write_text(
        '{"input": "Which environment variable chooses the workspace folder?", '
        '"reference": "SLMOPS_HOME"}\n'
        '{"input": "What does a workspace use for metadata by default?", "reference": "SQLite"}\n'
        '{"input": "What is the capital of France?", "answerable": false}\n'
        '{"input": "How much does an enterprise license cost?", "answerable": false}\n'
    )
    slmops("eval", "dataset", "add", "labelled", str(cases), home=home)
    args = ["eval", "calibrate", "qa", "-d", "labelled", "--thresholds", "0.2,0.9"]
    swept = slmops(*args, "--apply", home=home, cwd=project)
    assert swept.returncode == 0, swept.stderr
    assert re.search(r"0\.5 \(now\)", swept.stdout) and "refusal_correctn" in swept.stdout
    recommended = re.search(r"Recommended: min_score = ([\d.]+) on step 'cite'", swept.stdout)
    assert recommended, swept.stdout
    manifest = (project / "qa" / "slmops.toml").read_text()
    assert f"min_score = {recommended.group(1)}" in manifest
    assert_one_line_error(
        slmops(
            "eval", "calibrate", "qa", "-d", "labelled", "--check", "speed", home=home, cwd=project
        ),
        "unknown check 'speed'",
    )
