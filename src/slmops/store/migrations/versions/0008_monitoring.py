"""Monitoring: human feedback on traces, online evaluation scores, alert rules and their
events, and hourly rollups that outlive the traces retention deletes.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("trace_id", sa.String(32), nullable=False, index=True),
        sa.Column("stack", sa.String(255), nullable=False, index=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("scale", sa.String(8), nullable=False),
        sa.Column("raw_score", sa.Integer),
        sa.Column("score", sa.Float),
        sa.Column("comment", sa.Text),
        sa.Column("correction", sa.Text),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("author", sa.String(100)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
    )
    op.create_table(
        "monitor_scores",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("metric", sa.String(64), primary_key=True),
        sa.Column("stack", sa.String(255), nullable=False, index=True),
        sa.Column("value", sa.Float),
        sa.Column("trace_started_at", sa.Float, nullable=False, index=True),
        sa.Column("scored_at", sa.Float, nullable=False),
    )
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("stack", sa.String(255), nullable=False, index=True),
        sa.Column("expression", sa.Text, nullable=False),
        sa.Column("figure", sa.String(64), nullable=False),
        sa.Column("op", sa.String(2), nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("for_s", sa.Float, nullable=False),
        sa.Column("window_s", sa.Float, nullable=False),
        sa.Column("notify", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("since", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "rule_id",
            sa.Integer,
            sa.ForeignKey("alert_rules.id", ondelete="CASCADE"),
            index=True,
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("at", sa.Float, nullable=False, index=True),
        sa.Column("deliveries", sa.JSON, nullable=False),
    )
    op.create_table(
        "monitor_rollups",
        sa.Column("stack", sa.String(255), primary_key=True),
        sa.Column("hour", sa.Float, primary_key=True),
        sa.Column("figures", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for table in ("monitor_rollups", "alert_events", "alert_rules", "monitor_scores", "feedback"):
        op.drop_table(table)
