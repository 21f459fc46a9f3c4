"""Event ids up to 256 characters, like user and item ids (the codec's contract).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Widening a varchar is a catalog-only change on PostgreSQL (no rewrite, no reindex);
    # SQLite does not enforce lengths.
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "feature_processed_events",
            "event_id",
            type_=sa.String(256),
            existing_type=sa.String(128),
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "feature_processed_events",
            "event_id",
            type_=sa.String(128),
            existing_type=sa.String(256),
        )
