"""External check: the rag template's answer modes on public QA sets, offline.

No QA data set is fetchable at run time here, but allennlp 0.9.0's wheel on PyPI carries
test fixtures cut from three public sets: SQuAD v1.1 dev (5 questions on 2 Wikipedia
paragraphs), TriviaQA's Wikipedia domain (questions with the Wikipedia articles that hold
their answers) and DROP (questions needing counting or arithmetic over a passage). This
script downloads that wheel once (pip, pinned by sha256), turns TriviaQA and DROP into
SQuAD's format, imports all three with ``read_squad`` (what ``slmops eval import-squad``
does) into one corpus, so every passage is a distractor for the other questions, adds ten
unanswerable questions (bench/data/public-qa-unanswerable.jsonl: facts the corpus does not
hold), and runs the ``rag`` template (the quickstart's stack: retrieve k=4 hybrid,
SmolLM2-135M, cite check) in each answer mode (extractive, hybrid, generative) over each set
with ``EvalRun``. The bundled handbook with its own hand-written questions
(bench/data/handbook-qa.jsonl: 18 answerable, 8 not) is the fifth set.

Each extractive and hybrid run is then compared with the generative run on the same cases
(``eval compare``: the change of each metric with its 95% paired bootstrap interval).

Run: python bench/eval_public_qa.py [--cache DIR] [--workspace DIR] [--modes ...]
     [--concurrency 1 2 4]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from slmops.apps.build import build_stack
from slmops.apps.discovery import workspace_stacks
from slmops.apps.manifest import ANSWER_MODES
from slmops.apps.quickstart import bundled_docs
from slmops.apps.templates import DEFAULT_MODEL, ensure_workspace_stack
from slmops.core.runtime import Runtime
from slmops.data.corpus import corpora_for
from slmops.eval.compare import compare_runs
from slmops.eval.datasets import Datasets, read_cases
from slmops.eval.metrics import CaseResult
from slmops.eval.runner import EvalRun, build_metrics, load_results
from slmops.eval.squad import read_squad
from slmops.store import Workspace
from slmops.store.traces import get_trace

WHEEL = "allennlp==0.9.0"
WHEEL_FILE = "allennlp-0.9.0-py3-none-any.whl"
WHEEL_SHA256 = "353752e7b78e48c450e27889d80a3000c4a9af34f70ff9091b3031ad01320940"
FIXTURES = "allennlp/tests/fixtures/data/"
METRICS = [
    "hit_rate",
    "mrr",
    "exact_match",
    "token_f1",
    "contains_answer",
    "faithfulness",
    "refusal_correctness",
]
CORPUS = "public-qa"
DATA = Path(__file__).parent / "data"
PUBLIC_SETS = ("squad-sample", "triviaqa-sample", "drop-sample", "public-unanswerable")


def fetch_wheel(cache: Path) -> Path:
    wheel = cache / WHEEL_FILE
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        subprocess.run([*pip, "-q", "-d", str(cache), WHEEL], check=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: sha256 {digest} is not the pinned {WHEEL_SHA256}")
    return wheel


def squad_json(articles: list[dict[str, Any]]) -> dict[str, Any]:
    return {"version": "1.1", "data": articles}


def triviaqa_as_squad(wheel: zipfile.ZipFile, work: Path) -> dict[str, Any]:
    """Each TriviaQA (Wikipedia) question under the first of its evidence articles that
    contains the answer; the aliases are accepted alternatives."""
    archive = work / "triviaqa-sample.tgz"
    archive.write_bytes(wheel.read(FIXTURES + "triviaqa-sample.tgz"))
    folder = work / "triviaqa"
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    questions: dict[str, dict[str, Any]] = {}
    for split in ("wikipedia-train.json", "wikipedia-dev.json"):
        for item in json.loads((folder / "qa" / split).read_text())["Data"]:
            questions.setdefault(item["QuestionId"], item)
    by_page: dict[str, dict[str, Any]] = {}
    for qid, item in questions.items():
        answers = [item["Answer"]["Value"], *item["Answer"].get("Aliases", [])]
        for page in item["EntityPages"]:
            text = (folder / "evidence" / "wikipedia" / page["Filename"]).read_text()
            if any(a.lower() in text.lower() for a in answers):
                entry = by_page.setdefault(page["Filename"], {"context": text, "qas": []})
                unique = [{"text": a} for a in dict.fromkeys(answers)]
                entry["qas"].append({"id": qid, "question": item["Question"], "answers": unique})
                break
    return squad_json(
        [{"title": name.removesuffix(".txt"), "paragraphs": [p]} for name, p in by_page.items()]
    )


def drop_answer(answer: dict[str, Any]) -> str:
    if answer.get("number"):
        return str(answer["number"])
    if answer.get("spans"):
        return " ".join(answer["spans"])
    date = answer.get("date") or {}
    return " ".join(date.get(k, "") for k in ("day", "month", "year") if date.get(k))


def drop_as_squad(wheel: zipfile.ZipFile) -> dict[str, Any]:
    passages = json.loads(wheel.read(FIXTURES + "drop.json"))
    articles = []
    for key, passage in passages.items():
        qas = [
            {"id": qa["query_id"], "question": qa["question"], "answers": [{"text": text}]}
            for qa in passage["qa_pairs"]
            if (text := drop_answer(qa["answer"]))
        ]
        articles.append({"title": key, "paragraphs": [{"context": passage["passage"], "qas": qas}]})
    return squad_json(articles)


def set_figures(ws: Workspace, run_id: str, summary: dict[str, Any]) -> dict[str, float | None]:
    """The table's figures for one run: metric means, refused and extracted shares, p50."""
    rows = load_results(ws, run_id)
    means = {k.split("@")[0]: m["mean"] for k, m in summary["metrics"].items()}
    return {
        **means,
        "refused": sum(CaseResult(**r["result"]).refused for r in rows) / len(rows),
        "extracted": sum(extracted(ws, r["trace_id"]) for r in rows) / len(rows),
        "p50": summary["p50_latency_ms"],
        "cases": len(rows),
    }


def extracted(ws: Workspace, trace_id: str | None) -> bool:
    """Whether the case's answer was the passages' sentences (the cite span says so)."""
    if trace_id is None:
        return False
    _, spans = get_trace(ws.engine, trace_id)
    answered = [s["attributes"] for s in spans if "slmops.cite.extracted" in s["attributes"]]
    return (
        bool(answered)
        and bool(answered[-1]["slmops.cite.extracted"])
        and not bool(answered[-1].get("slmops.cite.refused"))
    )


def mode_stack(ws: Workspace, name: str, corpus: str, mode: str) -> Any:
    ensure_workspace_stack(name, "rag", ws, corpus=corpus, model=DEFAULT_MODEL, answer=mode)
    return build_stack(name, ws)


SHOWN = ("contains_answer", "token_f1", "faithfulness", "refusal_correctness")
COLUMNS = [
    ("hit@4", "hit_rate"),
    ("EM", "exact_match"),
    ("F1", "token_f1"),
    ("contains", "contains_answer"),
    ("faithful", "faithfulness"),
    ("refusal ok", "refusal_correctness"),
    ("refused", "refused"),
    ("extracted", "extracted"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "slmops-data")
    parser.add_argument("--workspace", type=Path, help="Keep the workspace here (else a temp dir).")
    parser.add_argument("--modes", nargs="+", default=list(ANSWER_MODES), choices=ANSWER_MODES)
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="*",
        default=[],
        help="Also time the DROP set at these --concurrency values (e.g. 1 2 4).",
    )
    parser.add_argument(
        "--timing-only",
        action="store_true",
        help="Skip the answer-mode table: only ingest and time the DROP set (--concurrency).",
    )
    parser.add_argument(
        "--sweep-generation",
        action="store_true",
        help="Also run the hybrid mode with other stop strings and max_tokens.",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with zipfile.ZipFile(fetch_wheel(args.cache)) as wheel:
            sources = {
                "squad": json.loads(wheel.read(FIXTURES + "squad.json")),
                "triviaqa": triviaqa_as_squad(wheel, work),
                "drop": drop_as_squad(wheel),
            }
        ws = Workspace.open(args.workspace or work / "ws")
        folder = ws.home / "imports" / CORPUS  # a fixed place: a re-run changes no version
        folder.mkdir(parents=True, exist_ok=True)
        sets: dict[str, str] = {}  # dataset -> corpus
        for name, data in sources.items():
            (work / f"{name}.json").write_text(json.dumps(data))
            imported = read_squad(work / f"{name}.json", documents_file=f"{name}.jsonl")
            imported.write_documents(folder / f"{name}.jsonl")
            Datasets(ws).add(f"{name}-sample", imported.cases, source="squad")
            sets[f"{name}-sample"] = CORPUS
        Datasets(ws).add("public-unanswerable", read_cases(DATA / "public-qa-unanswerable.jsonl"))
        sets["public-unanswerable"] = CORPUS
        report = corpora_for(ws).ingest(  # exactly these passages, as import-squad does
            CORPUS, [folder / f"{n}.jsonl" for n in sources], allow_removals=True
        )
        corpora_for(ws).ingest("handbook", [bundled_docs()])
        Datasets(ws).add("handbook-qa", read_cases(DATA / "handbook-qa.jsonl"))
        sets["handbook-qa"] = "handbook"
        print(f"corpus {CORPUS}: {report.documents} passages, {report.chunks} chunks")
        runtime = Runtime.from_workspace(ws)
        header = ["set", "mode", "cases", *(c for c, _ in COLUMNS), "p50 ms"]
        print("".join(f"{h:>12}" for h in header))
        runs: dict[tuple[str, str], str] = {}
        for dataset, corpus in sets.items() if not args.timing_only else ():
            for mode in args.modes:
                prefix = "handbook" if corpus == "handbook" else "public-qa"
                stack = mode_stack(ws, f"{prefix}-{mode}", corpus, mode)
                runner = EvalRun(ws, stack, build_metrics(METRICS, ws.settings.embedder))
                run_id = runner.start(dataset, 1)
                _, cases = Datasets(ws).cases(dataset)
                summary = asyncio.run(runner.execute(run_id, cases, runtime, concurrency=1))
                runs[dataset, mode] = run_id
                figures = set_figures(ws, run_id, summary)
                cells = [dataset.removesuffix("-sample"), mode, str(figures["cases"])]
                cells += [cell(figures.get(key)) for _, key in COLUMNS]
                cells.append(f"{figures['p50']:.0f}")
                print("".join(f"{v:>12}" for v in cells) + f"   run {run_id[:12]}", flush=True)
        print("\nAgainst the generative mode (change, 95% paired bootstrap interval):")
        for (dataset, mode), run_id in runs.items():
            baseline = runs.get((dataset, "generative"))
            if mode == "generative" or baseline is None:
                continue
            comparison = compare_runs(ws, baseline, run_id)
            parts = [
                f"{d.metric} {d.delta:+.2f} [{d.low:+.2f}, {d.high:+.2f}]"
                for d in comparison.deltas
                if d.metric
                in ("contains_answer", "token_f1", "faithfulness", "refusal_correctness")
            ]
            print(f"  {dataset:>20} {mode:>10}: " + "; ".join(parts))
        if args.sweep_generation:
            sweep_generation(ws, runtime)
        timed = "generative" if "generative" in args.modes else args.modes[0]
        for concurrency in args.concurrency:  # the model's queue is what concurrency meets
            stack = mode_stack(ws, f"public-qa-{timed}", CORPUS, timed)
            time_drop(ws, stack, runtime, concurrency)
        ws.close()


GENERATION_VARIANTS = {  # name -> (the llm step's stop list, max_tokens)
    "stop blank line, 128": ('["\\n\\n"]', 128),
    "stop newline, 128": ('["\\n"]', 128),
    "stop newline, 48": ('["\\n"]', 48),
}


def sweep_generation(ws: Workspace, runtime: Runtime) -> None:
    """The hybrid mode's answer step with other generation settings, on the handbook and the
    four public sets together: quality, p50 and tokens written per variant."""
    print("\nHybrid mode, generation settings of the answer step:")
    datasets = Datasets(ws)
    if "public-all" not in datasets.names():
        together = [c for n in PUBLIC_SETS for c in datasets.cases(n)[1]]
        datasets.add("public-all", together, message="the four public sets")
    for corpus_prefix, dataset in (("handbook", "handbook-qa"), ("public-qa", "public-all")):
        source = workspace_stacks(ws) / f"{corpus_prefix}-hybrid" / "slmops.toml"
        for number, (variant, (stop, max_tokens)) in enumerate(GENERATION_VARIANTS.items()):
            name = f"{corpus_prefix}-hybrid-g{number}"
            text = source.read_text().replace(
                f'name = "{corpus_prefix}-hybrid"', f'name = "{name}"'
            )
            line = f"stop = {stop}\n"  # literal: a replacement string would read its escapes
            text = re.sub(r"stop = \[.*?\].*\n", lambda _, line=line: line, text, count=1)
            text = re.sub(r"max_tokens = \d+", f"max_tokens = {max_tokens}", text, count=1)
            (workspace_stacks(ws) / name).mkdir(exist_ok=True)
            (workspace_stacks(ws) / name / "slmops.toml").write_text(text)
            metrics = ["contains_answer", "token_f1", "faithfulness", "refusal_correctness"]
            runner = EvalRun(
                ws, build_stack(name, ws), build_metrics(metrics, ws.settings.embedder)
            )
            run_id = runner.start(dataset, 1)
            summary = asyncio.run(
                runner.execute(run_id, datasets.cases(dataset)[1], runtime, concurrency=1)
            )
            means = ", ".join(f"{k} {cell(m['mean'])}" for k, m in summary["metrics"].items())
            print(
                f"  {dataset:>12} {variant:>22}: {means}; p50 {summary['p50_latency_ms']:.0f} ms, "
                f"{summary['mean_completion_tokens']:.1f} tokens written"
            )


def cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def time_drop(ws: Workspace, stack: Any, runtime: Runtime, concurrency: int) -> None:
    """Wall time of one eval run on the DROP set, and the p50 latency it records, at this
    concurrency (llama.cpp's engine decodes up to its slots' worth of cases together)."""
    runner = EvalRun(ws, stack, build_metrics(["hit_rate"], ws.settings.embedder))
    run_id = runner.start("drop-sample", concurrency)
    _, cases = Datasets(ws).cases("drop-sample")
    started = time.perf_counter()
    summary = asyncio.run(runner.execute(run_id, cases, runtime, concurrency=concurrency))
    print(
        f"DROP at --concurrency {concurrency}: {time.perf_counter() - started:.1f} s for "
        f"{len(cases)} cases, p50 latency {summary['p50_latency_ms']:.0f} ms"
    )


if __name__ == "__main__":
    main()
