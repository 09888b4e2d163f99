"""Foundation: traces, spans, step cache and the shared artifact registry.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "traces",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("span_count", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("attributes", sa.JSON, nullable=False),
    )
    op.create_index("ix_traces_started_at", "traces", ["started_at"])
    op.create_table(
        "spans",
        sa.Column("span_id", sa.String(16), primary_key=True),
        sa.Column(
            "trace_id",
            sa.String(32),
            sa.ForeignKey("traces.trace_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("parent_id", sa.String(16)),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("end_ns", sa.BigInteger, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
    )
    op.create_index("ix_spans_trace_id", "spans", ["trace_id"])
    op.create_table(
        "cache_entries",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("step", sa.String(255), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_cache_entries_step", "cache_entries", ["step"])
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.UniqueConstraint("kind", "name", "version", name="uq_artifacts_kind_name_version"),
    )


def downgrade() -> None:
    op.drop_table("artifacts")
    op.drop_index("ix_cache_entries_step", "cache_entries")
    op.drop_table("cache_entries")
    op.drop_index("ix_spans_trace_id", "spans")
    op.drop_table("spans")
    op.drop_index("ix_traces_started_at", "traces")
    op.drop_table("traces")
