"""Data: corpora and their committed versions (each pins a LanceDB table version).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corpora",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("embedder", sa.String(500), nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("chunk_tokens", sa.Integer, nullable=False),
        sa.Column("overlap_tokens", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("checked_out", sa.Integer),
    )
    op.create_table(
        "corpus_versions",
        sa.Column(
            "corpus",
            sa.String(100),
            sa.ForeignKey("corpora.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("lance_version", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("documents", sa.Integer, nullable=False),
        sa.Column("chunks", sa.Integer, nullable=False),
        sa.Column("stats", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("corpus_versions")
    op.drop_table("corpora")
