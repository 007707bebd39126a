"""The shown version kept on the image row, and an index from a tag to its images.

Why this revision exists: the views decided which version's tags an image shows with a
``NOT EXISTS`` over every newer promoted score, which made each tag lookup join all scores of
all images (1.4 s for the first page of a tag at 100,000 images on PostgreSQL).

- ``images.shown_model_version_id``: the outcome of that rule, kept by ``mlc_core.db.shown``
  whenever scores are written or deleted and whenever a version is promoted; filled here for
  existing rows by the same rule.
- ``ix_image_tags_tag_image_id``: from a tag to the images carrying it.
- Views version 4: the same answers as version 3, joined on the kept column.

Revision ID: 7a4c9e1f2b6d
Revises: 3e8b5d2c9f40
Create Date: 2026-12-01 14:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mlc_core.db.views import create_views, drop_views

revision: str = "7a4c9e1f2b6d"
down_revision: str | None = "3e8b5d2c9f40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The rule of views version 3, as of this revision (code may change; a migration does not).
_BACKFILL = """
UPDATE images SET shown_model_version_id = (
    SELECT scores.model_version_id
    FROM scores
    JOIN model_versions ON model_versions.id = scores.model_version_id
    WHERE scores.image_id = images.id
      AND model_versions.promoted_at IS NOT NULL
      AND model_versions.rolled_back_at IS NULL
    ORDER BY model_versions.promoted_at DESC, model_versions.id DESC
    LIMIT 1
)
"""


def upgrade() -> None:
    drop_views(op, version=3)
    op.add_column(
        "images",
        # No foreign key: SQLite cannot drop a column that has one (the downgrade below).
        sa.Column("shown_model_version_id", sa.Integer(), nullable=True),
    )
    op.execute(_BACKFILL)
    op.create_index("ix_image_tags_tag_image_id", "image_tags", ["tag", "image_id"])
    create_views(op, version=4)


def downgrade() -> None:
    drop_views(op, version=4)
    op.drop_index("ix_image_tags_tag_image_id", table_name="image_tags")
    # SQLite 3.35+ drops a column in place (see the score claims revision for why not batch).
    op.execute("ALTER TABLE images DROP COLUMN shown_model_version_id")
    create_views(op, version=3)
