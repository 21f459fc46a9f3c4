"""Retention of processed event ids: the stream clock each id was claimed at, indexed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "feature_processed_events",
        sa.Column("stream_ms", sa.BigInteger, nullable=False, server_default="0"),
    )
    # Ids claimed before this revision count as claimed now (at the current stream clock), so
    # they are kept for one full window from here.
    op.execute(
        "UPDATE feature_processed_events"
        " SET stream_ms = COALESCE((SELECT MAX(updated_ms) FROM feature_items), 0)"
    )
    op.create_index(
        "ix_feature_processed_events_stream_ms", "feature_processed_events", ["stream_ms"]
    )


def downgrade() -> None:
    op.drop_index("ix_feature_processed_events_stream_ms", "feature_processed_events")
    with op.batch_alter_table("feature_processed_events") as batch:
        batch.drop_column("stream_ms")
