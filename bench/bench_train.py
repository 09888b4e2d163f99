"""Does fine-tuning help? The whole loop on shipped material, with every figure printed.

1. The bundled handbook becomes corpus ``handbook`` and the quickstart's ``handbook-rag`` stack.
2. Training data, synthesized: every sentence of the handbook (6+ words) is a reference
   answer; SmolLM2-135M writes up to ``--questions`` questions that the sentence answers
   (sampled, seeds 1..N, kept when they end with '?'). A sentence's questions share a group,
   so a sentence is either trained on or held out, never both. Examples are the stack's own
   prompt (its retrieved passages and the question) with the sentence as the answer; only
   examples whose sentence is among the retrieved passages are trained on (``grounded_only``).
3. SmolLM2-135M is fine-tuned with LoRA (``slmops train``), exported to GGUF, and the stack is
   evaluated on the held-out sentences' questions with the shipped model and the tuned one;
   ``eval compare`` gives each metric's change with its 95% bootstrap interval.
4. Speed and size: training tokens/s and peak memory beside a bare transformers + PEFT loop on
   the same batches (each in its own process), minutes per epoch, adapter and GGUF sizes,
   decode tokens/s of the exports beside the shipped Q4_1 file, and how close the quantized
   exports stay to the f16 one (next-token agreement, perplexity) on held-out conversations.

Run: ``python bench/bench_train.py [--workspace DIR] [--epochs 4] [--questions 6]``
(about 40 minutes on 2 cores; ``--workspace`` keeps the data and runs for a second look).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from slmops.apps.build import build_stack
from slmops.apps.quickstart import bundled_docs
from slmops.apps.templates import ensure_workspace_stack
from slmops.core.runtime import Runtime, use_runtime
from slmops.core.tracing import Tracer
from slmops.core.words import content_words
from slmops.data.corpus import corpora_for
from slmops.eval.compare import compare_runs
from slmops.eval.datasets import Datasets, EvalCase
from slmops.eval.runner import EvalRun, build_metrics
from slmops.models.base import ChatMessage, GenerationParams
from slmops.models.loading import BUILTIN_CHAT_MODELS, load_chat_model, shipped_file
from slmops.store import Workspace
from slmops.train.args import TrainArgs
from slmops.train.datasets import TrainDatasets, split_of
from slmops.train.export import RunExporter, closeness
from slmops.train.runs import Training
from slmops.train.sources import examples_from_eval_dataset

STACK = "handbook-rag"
METRICS = ["token_f1", "rouge_l", "contains_answer", "faithfulness", "refusal_correctness"]
SPLIT = 0.8
SPEED_STEPS = 6  # optimizer steps timed for the speed comparison (after one warm-up step)


def sentences_of(ws: Workspace) -> list[tuple[str, str]]:
    """(document id, sentence) for every distinct sentence of 6+ words in the corpus."""
    rows = corpora_for(ws).rows("handbook@latest")
    seen: set[str] = set()
    found = []
    for row in rows:
        text = re.sub(r"`+", "", row["text"])
        # Markdown wraps paragraphs: a line that starts no item, heading or paragraph goes on
        text = re.sub(r"\n(?![ \t]*(?:[-*#]|\d+\.|\n))", " ", text)
        for line in text.splitlines():
            line = line.strip().lstrip("-*0123456789. ").strip()
            if not line or line.startswith("#"):
                continue
            for sentence in re.split(r"(?<=[.!?])\s+", line):
                # chunks overlap, so one may start mid-sentence: whole sentences only
                whole = sentence[:1].isupper() or sentence.startswith("slmops ")
                long_enough = len(sentence.split()) >= 6 and sentence.endswith(".")
                if whole and long_enough and sentence not in seen:
                    seen.add(sentence)
                    found.append((row["doc_id"], sentence))
    return found


QUESTION_SYSTEM = "You write quiz questions."
QUESTION_PROMPT = "Sentence: {sentence}\n\nWrite one question that this sentence answers."


def write_questions(sentences: list[tuple[str, str]], per_sentence: int) -> list[EvalCase]:
    model = load_chat_model("local:smollm2-135m")
    cases = []
    for number, (doc_id, sentence) in enumerate(sentences, start=1):
        group = f"s{number:03d}"
        questions: list[str] = []
        for seed in range(1, per_sentence + 1):
            reply = model.chat(
                [
                    ChatMessage(role="system", content=QUESTION_SYSTEM),
                    ChatMessage(role="user", content=QUESTION_PROMPT.format(sentence=sentence)),
                ],
                GenerationParams(max_tokens=40, temperature=0.8, seed=seed, stop=["\n"]),
            ).text.strip()
            reply = reply.removeprefix("Question:").strip()
            # a question about the sentence shares at least two of its content words
            shared = set(content_words(reply)) & set(content_words(sentence))
            if reply.endswith("?") and len(shared) >= 2 and reply not in questions:
                questions.append(reply)
        for index, question in enumerate(questions, start=1):
            cases.append(
                EvalCase(
                    id=f"{group}-q{index}",
                    input=question,
                    reference=sentence,
                    reference_ids=[doc_id],
                    tags=["handbook-sentence"],
                    metadata={"group": group},
                )
            )
        print(f"\r  questions for {number}/{len(sentences)} sentences", end="", flush=True)
    print()
    return cases


def prepare_data(ws: Workspace, per_sentence: int) -> tuple[str, str]:
    """The training dataset and the held-out eval dataset (made once per workspace)."""
    datasets, train_sets = Datasets(ws), TrainDatasets(ws)
    if "handbook-train" in train_sets.names() and "handbook-heldout" in datasets.names():
        return "handbook-train@latest", "handbook-heldout@latest"
    corpora_for(ws).ingest("handbook", [bundled_docs()])
    # generative: the model answers, so its fine-tuning shows (extractive never calls it)
    ensure_workspace_stack(STACK, "rag", ws, corpus="handbook", answer="generative")
    sentences = sentences_of(ws)
    print(f"{len(sentences)} sentences in the handbook")
    cases = write_questions(sentences, per_sentence)
    everything, _ = datasets.add("handbook-sentences", cases, source="synth")
    heldout = [c for c in cases if split_of(str(c.metadata["group"]), SPLIT) == "heldout"]
    held, _ = datasets.add("handbook-heldout", heldout, source="synth")
    stack = build_stack(STACK, ws)
    with use_runtime(Runtime(tracer=Tracer(), workspace=ws)):  # renders are not traces
        built = asyncio.run(
            examples_from_eval_dataset(ws, everything.ref, stack, grounded_only=True)
        )
    version, _ = train_sets.add(
        "handbook-train", built.examples, split=SPLIT, source="dataset", lineage=built.lineage
    )
    left_out = ", ".join(f"{n} {why}" for why, n in built.skipped.items()) or "none"
    print(
        f"{everything.ref}: {len(cases)} questions on {len(sentences)} sentences; "
        f"{version.ref}: {version.train} train / {version.heldout} held-out examples "
        f"(left out: {left_out}); {held.ref}: {held.cases} held-out questions"
    )
    return version.ref, held.ref


# --- speed: slmops' run beside a bare transformers + PEFT loop ------------------------------


def speed_child(mode: str, home: str, data: str, args_json: str) -> None:
    """Runs in its own process: times SPEED_STEPS optimizer steps, prints one JSON line."""
    args = TrainArgs.model_validate_json(args_json)
    ws = Workspace.open(home)
    if mode == "slmops":
        times: list[tuple[float, float]] = []

        class Timer:
            def status(self, text: str) -> None: ...
            def begin(self, run_id: str, total: int, done: int) -> None: ...
            def epoch(self, state: Any, metrics: dict[str, float]) -> None: ...
            def step(self, state: Any, metrics: dict[str, float]) -> None:
                times.append((time.perf_counter(), float(state.tokens)))

        Training(ws).start(
            base="local:smollm2-135m",
            data=data,
            args=args.model_copy(update={"max_steps": SPEED_STEPS + 1}),
            name="speed-check",
            progress=Timer(),
        )
        (t0, k0), (t1, k1) = times[0], times[-1]
        tokens_per_s = (k1 - k0) / (t1 - t0)
    else:
        tokens_per_s = bare_loop(ws, data, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tokens_per_s": tokens_per_s, "peak_mb": peak}))


def bare_loop(ws: Workspace, data: str, args: TrainArgs) -> float:
    """The loop a transformers + PEFT user writes: the model's own loss (logits for every
    position), same examples, batches, precision, optimizer and LoRA settings."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slmops.train.base import prepare_base
    from slmops.train.encoding import IGNORE, encode_all, epoch_batches

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    base = prepare_base("local:smollm2-135m", ws)
    tokenizer = AutoTokenizer.from_pretrained(base.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(base.checkpoint, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(
            r=args.lora.r,
            lora_alpha=args.lora.alpha,
            lora_dropout=args.lora.dropout,
            target_modules=list(args.lora.targets),
            task_type="CAUSAL_LM",
        ),
    )
    model.train()
    _, examples = TrainDatasets(ws).examples(data)
    encoded, _ = encode_all(
        tokenizer, [e for e in examples if e.split == "train"], args.max_seq_tokens
    )
    batches = epoch_batches(encoded, args.micro_batch_size, args.seed, 0)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=args.learning_rate
    )
    bf16 = (
        bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if args.precision == "auto"
        else (args.precision == "bf16")
    )
    started, tokens = 0.0, 0
    for step in range(SPEED_STEPS + 1):
        if step == 1:
            started, tokens = time.perf_counter(), 0
        group = batches[step * args.grad_accumulation : (step + 1) * args.grad_accumulation]
        for micro in group:
            items = [encoded[i] for i in micro]
            width = max(len(e.input_ids) for e in items)
            ids = torch.full((len(items), width), tokenizer.pad_token_id, dtype=torch.long)
            labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
            mask = torch.zeros((len(items), width), dtype=torch.long)
            for row, e in enumerate(items):
                ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
                labels[row, : len(e.labels)] = torch.tensor(e.labels)
                mask[row, : len(e.input_ids)] = 1
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            (loss / len(group)).backward()
            tokens += sum(len(e.input_ids) for e in items)
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return tokens / (time.perf_counter() - started)


def measure_speed(home: Path, data: str, args: TrainArgs) -> dict[str, dict[str, float]]:
    figures = {}
    for mode in ("bare", "slmops"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--speed-child",
                mode,
                str(home),
                data,
                args.model_dump_json(),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        figures[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {mode}: {figures[mode]['tokens_per_s']:.0f} tokens/s")
    return figures


# --- decoding and closeness -----------------------------------------------------------------


def decode_speed(uri: str) -> float:
    """Tokens/s of ``uri``, measured in a process of its own: llama.cpp decodes slower from
    a process that has already run models on other threads (OpenMP teams)."""
    out = subprocess.run(
        [sys.executable, __file__, "--decode-child", uri],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def decode_child(uri: str) -> float:
    """Tokens/s decoding 64 tokens greedily after each of a few prompts, timed from the first
    new token (the prompt is read before the clock starts), whatever the model would say:
    every file decodes the same number of tokens."""
    from llama_cpp import Llama

    from slmops.models.uri import parse_model_uri

    parsed = parse_model_uri(uri)
    path = (
        shipped_file(*BUILTIN_CHAT_MODELS[parsed.location])
        if parsed.scheme == "local"
        else Path(parsed.location)
    )
    llm = Llama(model_path=str(path), n_ctx=512, n_threads=os.cpu_count(), verbose=False)
    prompts = ["Tell me a long story about a lighthouse.", "Explain how rain forms, in detail."]
    tokens, seconds = 0, 0.0
    for prompt in prompts * 2:
        llm.reset()
        llm.eval(llm.tokenize(prompt.encode("utf-8")))
        started = time.perf_counter()
        for _ in range(64):
            llm.eval([llm.sample(top_k=1, temp=0.0)])
        seconds += time.perf_counter() - started
        tokens += 64
    return tokens / seconds


def decode_figures(exports: dict[str, str]) -> dict[str, float]:
    """Decode tokens/s of the shipped file and the exports, alternating twice (tokens/s drift
    between processes on a shared VM); the better of two for each."""
    uris = {"shipped Q4_1": "local:smollm2-135m", **exports}
    best: dict[str, float] = {}
    for _ in range(2):
        for name, uri in uris.items():
            best[name] = max(best.get(name, 0.0), decode_speed(uri))
    return best


def compare_decoding(home: Path | None) -> None:
    if home is None:
        raise SystemExit("--decode-only needs --workspace (where a bench run left its exports)")
    ws = Workspace.open(home)
    run = Training(ws).runs(limit=1)[0]
    exporter = RunExporter(ws, run.run_id)
    exports = {fmt: exporter.export(fmt).model_uri for fmt in ("gguf-q8_0", "gguf-q4_0")}
    for name, rate in decode_figures(exports).items():
        print(f"| decode tokens/s, {name} | {rate:.1f} |")


def heldout_texts(ws: Workspace, data: str, limit: int = 12) -> list[str]:
    from transformers import AutoTokenizer

    from slmops.train.base import prepare_base

    tokenizer = AutoTokenizer.from_pretrained(prepare_base("local:smollm2-135m", ws).checkpoint)
    _, examples = TrainDatasets(ws).examples(data)
    held = [e for e in examples if e.split == "heldout"][:limit]
    return [
        tokenizer.apply_chat_template([m.model_dump() for m in e.messages or []], tokenize=False)
        for e in held
    ]


def evaluate(ws: Workspace, dataset: str, model: str | None) -> str:
    overrides = {"chat": model} if model else None
    stack = build_stack(STACK, ws, models=overrides)
    runner = EvalRun(ws, stack, build_metrics(METRICS, ws.settings.embedder))
    run_id = runner.start(dataset, 1, models=overrides)
    _, cases = Datasets(ws).cases(dataset)
    started = time.perf_counter()
    asyncio.run(runner.execute(run_id, cases, Runtime.from_workspace(ws), concurrency=1))
    print(
        f"  {model or 'shipped model'}: {len(cases)} cases in {time.perf_counter() - started:.0f} s"
    )
    return run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, help="keep everything here (default: a temp dir)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--questions", type=int, default=6, help="question attempts per sentence")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--plot", type=Path, help="also write the loss curve here (SVG)")
    parser.add_argument("--patience", type=int, default=2, help="early stop on held-out loss")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed comparison")
    parser.add_argument(
        "--decode-only", action="store_true", help="only the decode comparison of the newest run"
    )
    parser.add_argument("--speed-child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--decode-child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.speed_child:
        speed_child(*options.speed_child)
        return
    if options.decode_child:
        print(decode_child(options.decode_child))
        return
    if options.decode_only:
        compare_decoding(options.workspace)
        return
    home = options.workspace or Path(tempfile.mkdtemp(prefix="slmops-bench-train-"))
    ws = Workspace.open(home)
    print(f"workspace {home}")
    started = time.perf_counter()
    data, heldout = prepare_data(ws, options.questions)
    args = TrainArgs(
        epochs=options.epochs,
        early_stop_patience=options.patience,
        learning_rate=options.lr,
        lora={"r": options.lora_r, "alpha": 2 * options.lora_r},  # type: ignore[arg-type]
    )
    speed: dict[str, dict[str, float]] = {}
    if not options.no_speed:
        print("speed (same batches, one process each):")
        speed = measure_speed(home, data, args)
    print("fine-tuning:")
    last = [0.0]

    class Report:
        def status(self, text: str) -> None:
            print(f"  {text}")

        def begin(self, run_id: str, total: int, done: int) -> None:
            print(f"  run {run_id}: {total} steps")

        def step(self, state: Any, metrics: dict[str, float]) -> None:
            if time.perf_counter() - last[0] > 30:
                last[0] = time.perf_counter()
                print(
                    f"  step {state.step}/{int(metrics['total_steps'])} loss "
                    f"{metrics['train_loss']:.3f} {metrics['tokens_per_s']:.0f} tok/s"
                )

        def epoch(self, state: Any, metrics: dict[str, float]) -> None:
            print(f"  epoch {state.epoch + 1}: held-out loss {metrics.get('heldout_loss', 0):.4f}")

    training = Training(ws)
    outcome = training.start(base="local:smollm2-135m", data=data, args=args, progress=Report())
    exporter = RunExporter(ws, outcome.run_id)
    exports = {
        fmt: exporter.export(fmt) for fmt in ("adapter", "gguf-f16", "gguf-q8_0", "gguf-q4_0")
    }
    if options.plot:
        training.write_plot(outcome.run_id, options.plot)
    print("evaluation on the held-out sentences' questions:")
    base_run = evaluate(ws, heldout, None)
    tuned_run = evaluate(ws, heldout, exports["gguf-q8_0"].model_uri)
    comparison = compare_runs(ws, base_run, tuned_run)
    print("decode speed (one process each):")
    decode = decode_figures({fmt: exports[fmt].model_uri for fmt in ("gguf-q8_0", "gguf-q4_0")})
    texts = heldout_texts(ws, data)
    close = {
        fmt: closeness(exports["gguf-f16"].path, exports[fmt].path, texts)
        for fmt in ("gguf-q8_0", "gguf-q4_0")
    }

    run = training.run(outcome.run_id)
    print(f"\n== slmops fine-tuning bench ({(time.perf_counter() - started) / 60:.1f} min)")
    print(
        f"data: {data} ({run.params['train_examples']} train, {run.params['heldout_examples']} "
        f"held-out examples); eval: {heldout} ({comparison.shared_cases} questions)"
    )
    print(
        f"run {outcome.run_id}: {outcome.state.step} steps, stop: {outcome.state.stop_reason}, "
        f"best held-out loss {run.metrics.get('best_heldout_loss', float('nan')):.4f} "
        f"(epoch {outcome.state.best_epoch})"
    )
    print("\n| metric | shipped SmolLM2-135M | fine-tuned (q8_0) | change | 95% interval |")
    print("| --- | --- | --- | --- | --- |")
    for d in comparison.deltas:
        mark = " *" if d.significant else ""
        print(
            f"| {d.metric} | {d.a:.3f} | {d.b:.3f} | {d.delta:+.3f}{mark} | "
            f"[{d.low:+.3f}, {d.high:+.3f}] |"
        )
    p50 = comparison.latency.get("p50_latency_ms", (None, None))
    print(f"| p50 latency (ms) | {p50[0] or 0:.0f} | {p50[1] or 0:.0f} | | |")
    print("\n| figure | slmops | baseline |")
    print("| --- | --- | --- |")
    if speed:
        ratio = speed["slmops"]["tokens_per_s"] / speed["bare"]["tokens_per_s"]
        print(
            f"| training tokens/s (LoRA r={options.lora_r}) | "
            f"{speed['slmops']['tokens_per_s']:.0f} | {speed['bare']['tokens_per_s']:.0f} bare "
            f"transformers+PEFT loop ({ratio:.2f}x; target >= 0.95x) |"
        )
        print(
            f"| peak memory (process RSS) | {speed['slmops']['peak_mb']:.0f} MB | "
            f"{speed['bare']['peak_mb']:.0f} MB |"
        )
    print(f"| tokens/s over the whole run | {run.metrics.get('train_tokens_per_s', 0):.0f} | |")
    print(f"| minutes per epoch | {run.metrics.get('minutes_per_epoch', 0):.1f} | |")
    for fmt, result in exports.items():
        print(
            f"| size of {fmt} | {result.size_bytes / 1e6:.1f} MB | shipped Q4_1: "
            f"{shipped_file(*BUILTIN_CHAT_MODELS['smollm2-135m']).stat().st_size / 1e6:.1f} MB |"
        )
    for name, rate in decode.items():
        print(f"| decode tokens/s, {name} | {rate:.1f} | |")
    for fmt, c in close.items():
        print(
            f"| {fmt} vs f16 on {c.tokens} held-out tokens: next-token agreement, perplexity | "
            f"{c.agreement:.3f}, {c.perplexity_candidate:.3f} | f16 perplexity "
            f"{c.perplexity_reference:.3f} |"
        )
    if not options.workspace:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
