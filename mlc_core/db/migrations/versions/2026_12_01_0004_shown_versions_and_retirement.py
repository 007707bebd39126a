"""Tags never vanish, deleted objects are retired, a crashing image stops being claimed.

Why this revision exists:

- ``images.retired_at``: an object gone from the store (a read found it missing, or a complete
  listing of its prefix did not show it) leaves the views but keeps its rows.
- ``images.listed_at``: when a listing last showed the version, so a complete listing can tell
  which known images it did not see without holding every key in memory.
- ``images.abandoned_claims``: how often the image's claim was taken over from a dead run; an
  image that keeps killing its scorer is recorded as failed instead of being claimed again.
- ``model_versions.rolled_back_at``: a version that stepped down for an older one (a rollback)
  shows no tags until it is promoted again.
- The views show, for each current image, the tags of the champion where it scored the image,
  else of the version that was champion most recently among those that scored it (a promotion
  no longer empties them), never those of an image whose latest scoring failed. The new view
  ``shown_scores`` is that choice, one row per image.

Revision ID: 9d2f4c1a7b3e
Revises: 5c1e0b7f3a21
Create Date: 2026-12-01 11:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mlc_core.db.views import create_views, drop_views

revision: str = "9d2f4c1a7b3e"
down_revision: str | None = "5c1e0b7f3a21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    drop_views(op, version=1)
    op.add_column("images", sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("images", sa.Column("listed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "images",
        sa.Column("abandoned_claims", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "model_versions", sa.Column("rolled_back_at", sa.DateTime(timezone=True), nullable=True)
    )
    create_views(op, version=2)


def downgrade() -> None:
    drop_views(op, version=2)
    # SQLite 3.35+ drops a column in place (see the score claims revision for why not batch).
    for table, column in (
        ("model_versions", "rolled_back_at"),
        ("images", "abandoned_claims"),
        ("images", "listed_at"),
        ("images", "retired_at"),
    ):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    create_views(op, version=1)
