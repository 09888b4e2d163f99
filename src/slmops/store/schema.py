"""Tables of the metadata database.

Each lifecycle part owns its tables and adds them through an Alembic migration of its own.
The ``artifacts`` table is the shared registry of versioned files (corpora exports, prompt
bundles, model weights, reports) that later parts reference by id.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

traces = Table(
    "traces",
    metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False),  # "ok" | "error"
    Column("started_at", Float, nullable=False, index=True),  # unix seconds
    Column("duration_ms", Float, nullable=False),
    Column("span_count", Integer, nullable=False),
    Column("error", Text),
    Column("attributes", JSON, nullable=False, default=dict),
)

spans = Table(
    "spans",
    metadata,
    Column("span_id", String(16), primary_key=True),
    Column(
        "trace_id", String(32), ForeignKey("traces.trace_id", ondelete="CASCADE"), nullable=False
    ),
    Column("parent_id", String(16)),
    Column("name", String(255), nullable=False),
    Column("kind", String(32), nullable=False),  # step kind: function, chain, llm, ...
    Column("status", String(16), nullable=False),
    Column("start_ns", BigInteger, nullable=False),
    Column("end_ns", BigInteger, nullable=False),
    Column("error", Text),
    Column("attributes", JSON, nullable=False, default=dict),
    Column("events", JSON, nullable=False, default=list),
    Index("ix_spans_trace_id", "trace_id"),
)

cache_entries = Table(
    "cache_entries",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("step", String(255), nullable=False, index=True),
    Column("value", Text, nullable=False),  # canonical JSON of the step's validated output
    Column("created_at", Float, nullable=False),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),  # corpus, prompt, dataset, model, report, ...
    Column("name", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("uri", Text, nullable=False),
    Column("sha256", String(64)),
    Column("size_bytes", BigInteger),
    Column("created_at", Float, nullable=False),
    Column("attributes", JSON, nullable=False, default=dict),
    UniqueConstraint("kind", "name", "version", name="uq_artifacts_kind_name_version"),
)

corpora = Table(
    "corpora",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("embedder", String(500), nullable=False),
    Column("dimension", Integer, nullable=False),
    Column("chunk_tokens", Integer, nullable=False),
    Column("overlap_tokens", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("checked_out", Integer),  # the version retrieval uses by default; None = latest
)

corpus_versions = Table(
    "corpus_versions",
    metadata,
    Column("corpus", String(100), ForeignKey("corpora.name", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("lance_version", Integer, nullable=False),  # the LanceDB table version it pins
    Column("message", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("documents", Integer, nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("stats", JSON, nullable=False, default=dict),  # added/removed/embedded/skipped
)

prompts = Table(
    "prompts",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("template", Text, nullable=False),
    Column("system", Text),
    Column("message", Text, nullable=False),
    Column(
        "sha256", String(64), nullable=False
    ),  # of system + template: identical = no new version
    Column("variables", JSON, nullable=False, default=list),
    Column("created_at", Float, nullable=False),
)

prompt_tags = Table(
    "prompt_tags",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("tag", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
)

eval_datasets = Table(
    "eval_datasets",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("message", Text, nullable=False),
    Column("source", String(32), nullable=False),  # file | synth | redteam | feedback
    Column("cases", Integer, nullable=False),
    Column(
        "sha256", String(64), nullable=False
    ),  # of the canonical JSONL: identical = no new version
    Column("uri", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

eval_runs = Table(
    "eval_runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("stack", String(100), nullable=False),
    Column("dataset", String(120), nullable=False),  # NAME@VERSION, resolved
    Column("status", String(16), nullable=False),  # running | complete | interrupted
    Column("started_at", Float, nullable=False, index=True),
    Column("finished_at", Float),
    Column("versions", JSON, nullable=False),  # the stack's corpus/prompt/model versions
    Column("config", JSON, nullable=False),  # metrics, concurrency
    Column("summary", JSON, nullable=False),  # metric means, latency, tokens, errors
)

eval_results = Table(
    "eval_results",
    metadata,
    Column("run_id", String(32), ForeignKey("eval_runs.id"), primary_key=True),
    Column("case_id", String(64), primary_key=True),
    Column("trace_id", String(32)),
    Column("status", String(16), nullable=False),  # ok | error
    Column("result", JSON, nullable=False),  # CaseResult fields
    Column("scores", JSON, nullable=False),  # metric key -> score (null: not applicable)
    Column("finished_at", Float, nullable=False),
)

train_datasets = Table(
    "train_datasets",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("message", Text, nullable=False),
    Column("source", String(32), nullable=False),  # file | dataset | traces
    Column("format", String(16), nullable=False),  # chat | completion
    Column("examples", Integer, nullable=False),
    Column("train", Integer, nullable=False),  # examples in the training split
    Column("heldout", Integer, nullable=False),  # examples held out for validation
    Column("split", Float, nullable=False),  # the training fraction asked for
    Column("lineage", JSON, nullable=False),  # eval dataset, stack, prompt, corpus versions
    Column("sha256", String(64), nullable=False),
    Column("uri", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

model_alias_events = Table(
    "model_alias_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(100), nullable=False, index=True),
    Column("alias", String(64), nullable=False),
    Column("from_version", Integer),  # None: the alias did not exist
    Column("to_version", Integer),  # None: the alias was removed
    Column("action", String(16), nullable=False),  # promote | rollback
    Column("actor", String(100), nullable=False),
    Column("reason", Text, nullable=False),
    Column("evidence", JSON, nullable=False),  # eval run ids, gate results
    Column("created_at", Float, nullable=False),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # No foreign key: feedback outlives its trace when retention deletes old traces.
    Column("trace_id", String(32), nullable=False, index=True),
    Column("stack", String(255), nullable=False, index=True),  # the trace's name
    Column("source", String(16), nullable=False),  # user | reviewer
    Column("scale", String(8), nullable=False),  # thumbs (0/1) | stars (1-5)
    Column("raw_score", Integer),  # as given; None: a comment or correction only
    Column("score", Float),  # raw_score mapped to 0-1
    Column("comment", Text),
    Column("correction", Text),  # the answer it should have been
    Column("labels", JSON, nullable=False, default=list),
    Column("author", String(100)),
    Column("request_id", String(128)),
    Column("created_at", Float, nullable=False, index=True),
)

monitor_scores = Table(
    "monitor_scores",
    metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("metric", String(64), primary_key=True),
    Column("stack", String(255), nullable=False, index=True),
    Column("value", Float),  # None: the metric does not apply to this trace
    Column("trace_started_at", Float, nullable=False, index=True),
    Column("scored_at", Float, nullable=False),
)

alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("stack", String(255), nullable=False, index=True),
    Column("expression", Text, nullable=False),  # as the user wrote it
    Column("figure", String(64), nullable=False),
    Column("op", String(2), nullable=False),
    Column("threshold", Float, nullable=False),
    Column("for_s", Float, nullable=False),  # how long the condition must hold
    Column("window_s", Float, nullable=False),  # the figure's window
    Column("notify", JSON, nullable=False, default=list),  # webhook:URL, log
    Column("state", String(16), nullable=False),  # ok | pending | firing
    Column("since", Float),  # when the condition began to hold (pending/firing)
    Column("created_at", Float, nullable=False),
)

alert_events = Table(
    "alert_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule_id", Integer, ForeignKey("alert_rules.id", ondelete="CASCADE"), index=True),
    Column("state", String(16), nullable=False),  # firing | resolved
    Column("value", Float),
    Column("at", Float, nullable=False, index=True),
    Column("deliveries", JSON, nullable=False, default=dict),  # target -> ok | error text
)

monitor_rollups = Table(
    "monitor_rollups",
    metadata,
    # Hourly aggregates kept when retention deletes the traces they summarize.
    Column("stack", String(255), primary_key=True),
    Column("hour", Float, primary_key=True),  # unix seconds at the hour's start
    Column("figures", JSON, nullable=False),  # a Tally (monitor/figures.py)
)

pipeline_runs = Table(
    "pipeline_runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("pipeline", String(100), nullable=False, index=True),
    Column("spec", JSON, nullable=False),  # the declaration as run (a resume reuses it)
    Column("spec_sha256", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # running | complete | failed | interrupted
    Column("trigger", String(64), nullable=False),  # manual | schedule | watch:PATH | ...
    Column("executor", String(16), nullable=False),  # local | ray
    Column("host", String(255), nullable=False),  # where it runs: a dead pid there = stopped
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False, index=True),
    Column("finished_at", Float),
    Column("error", Text),
)

pipeline_steps = Table(
    "pipeline_steps",
    metadata,
    Column(
        "run_id",
        String(32),
        ForeignKey("pipeline_runs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("step", String(100), primary_key=True),
    Column("op", String(32), nullable=False),
    # pending | running | ok | cached | failed | gate_failed | skipped | interrupted
    Column("status", String(16), nullable=False),
    Column("key", String(64), index=True),  # hash of op, code, parameters and input versions
    Column("inputs", JSON, nullable=False),  # what the key was computed from
    Column("outputs", JSON, nullable=False),  # the versions and figures it produced
    Column("progress", JSON, nullable=False),  # resumable state (an eval run id, ...)
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("error", Text),
)
