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
