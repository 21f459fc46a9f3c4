"""Initial feature store: processed event ids, user features (with history), item features.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per event ever applied: the unique key that makes redelivery a no-op.
    op.create_table(
        "feature_processed_events",
        sa.Column("event_id", sa.String(128), primary_key=True),
        sa.Column("ingested_ms", sa.BigInteger, nullable=False),
    )
    # History is kept denormalised (serialized repeated HistoryEntry, most recent first, at most
    # N entries) so a batch read of users is one primary-key lookup per user.
    op.create_table(
        "feature_users",
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column("event_count", sa.BigInteger, nullable=False),
        sa.Column("decayed", sa.Double, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.Column("history", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "feature_items",
        sa.Column("item_id", sa.String(256), primary_key=True),
        sa.Column("event_count", sa.BigInteger, nullable=False),
        sa.Column("decayed", sa.Double, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    # The stream clock (latest event time) readers decay to is max(updated_ms).
    op.create_index("ix_feature_items_updated_ms", "feature_items", ["updated_ms"])


def downgrade() -> None:
    op.drop_index("ix_feature_items_updated_ms", "feature_items")
    op.drop_table("feature_items")
    op.drop_table("feature_users")
    op.drop_table("feature_processed_events")
