"""What changed between two model versions, per tag, kept as counts.

Why this revision exists: counting, per tag, the images one version tags and another does not
read every tag row of both versions: 2.7-3.5 s at a million images on PostgreSQL, above the 2 s
a person waits for an aggregate. ``tag_changes`` keeps those counts for every pair of versions
(the older id first), maintained by ``mlc_core.db.tag_changes`` whenever scores or tags are
written, deleted or retagged; filled here from the existing scores and tags.

Revision ID: 8c1d4e7a9b25
Revises: 4b8e2d6f1c93
Create Date: 2026-12-01 18:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8c1d4e7a9b25"
down_revision: str | None = "4b8e2d6f1c93"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The counts' rule as of this revision (code may change; a migration does not).
_BACKFILL = """
INSERT INTO tag_changes (old_version_id, new_version_id, tag, gained, lost)
SELECT older.model_version_id, newer.model_version_id, tag.tag,
       sum(CASE WHEN tag.model_version_id = newer.model_version_id AND NOT EXISTS (
               SELECT 1 FROM image_tags AS other
               WHERE other.image_id = tag.image_id
                 AND other.model_version_id = older.model_version_id
                 AND other.tag = tag.tag) THEN 1 ELSE 0 END),
       sum(CASE WHEN tag.model_version_id = older.model_version_id AND NOT EXISTS (
               SELECT 1 FROM image_tags AS other
               WHERE other.image_id = tag.image_id
                 AND other.model_version_id = newer.model_version_id
                 AND other.tag = tag.tag) THEN 1 ELSE 0 END)
FROM scores AS older
JOIN scores AS newer ON newer.image_id = older.image_id
                    AND newer.model_version_id > older.model_version_id
JOIN image_tags AS tag ON tag.image_id = older.image_id
                      AND (tag.model_version_id = older.model_version_id
                           OR tag.model_version_id = newer.model_version_id)
GROUP BY older.model_version_id, newer.model_version_id, tag.tag
"""


def upgrade() -> None:
    op.create_table(
        "tag_changes",
        sa.Column("old_version_id", sa.Integer(), nullable=False),
        sa.Column("new_version_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("gained", sa.Integer(), nullable=False),
        sa.Column("lost", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["old_version_id"],
            ["model_versions.id"],
            name=op.f("fk_tag_changes_old_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["new_version_id"],
            ["model_versions.id"],
            name=op.f("fk_tag_changes_new_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "old_version_id", "new_version_id", "tag", name=op.f("pk_tag_changes")
        ),
    )
    op.execute(_BACKFILL)


def downgrade() -> None:
    op.drop_table("tag_changes")
