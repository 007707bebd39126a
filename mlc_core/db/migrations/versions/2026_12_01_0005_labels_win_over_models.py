"""Labels win over models: corrections, and a source for every tag in the views.

Why this revision exists: people correct single tags of an image, and a correction must stay
fixed through rescoring, retagging and promotions.

- ``labels.complete``: the label came with the image's whole tag set (a ``key,tags`` file:
  every class it does not name is absent) rather than as a correction of a few tags (which
  says nothing of the others). Existing labels all came from whole-set files.
- ``current_tags`` (views version 3) shows a tag a positive label adds and hides one a label
  removes, with a ``source`` column (``model`` or ``human``).

Revision ID: 3e8b5d2c9f40
Revises: 9d2f4c1a7b3e
Create Date: 2026-12-01 12:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mlc_core.db.views import create_views, drop_views

revision: str = "3e8b5d2c9f40"
down_revision: str | None = "9d2f4c1a7b3e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    drop_views(op, version=2)
    op.add_column(
        "labels",
        sa.Column("complete", sa.Boolean(), server_default=sa.text("true"), nullable=False),
    )
    create_views(op, version=3)


def downgrade() -> None:
    drop_views(op, version=3)
    # SQLite 3.35+ drops a column in place (see the score claims revision for why not batch).
    op.execute("ALTER TABLE labels DROP COLUMN complete")
    create_views(op, version=2)
