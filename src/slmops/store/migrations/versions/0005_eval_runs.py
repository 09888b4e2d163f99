"""Evaluation runs and their per-case results (one row per case, written as it finishes, so
an interrupted run keeps everything done and can be resumed).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("stack", sa.String(100), nullable=False),
        sa.Column("dataset", sa.String(120), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False, index=True),
        sa.Column("finished_at", sa.Float),
        sa.Column("versions", sa.JSON, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
    )
    op.create_table(
        "eval_results",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("eval_runs.id"), primary_key=True),
        sa.Column("case_id", sa.String(64), primary_key=True),
        sa.Column("trace_id", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("scores", sa.JSON, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("eval_results")
    op.drop_table("eval_runs")
