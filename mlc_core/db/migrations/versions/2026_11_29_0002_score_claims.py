"""Score claims and run heartbeats: concurrent scoring runs never score an image twice.

Why this revision exists: two scoring runs over the same prefix at once (a nightly run that
overlaps a manual one, or several workers on one shard list) must never run inference on the
same image twice, and a run killed with ``kill -9`` must not block the images it held forever.

- ``score_claims(image_id, model_version_id, run_id, claimed_at)``: an image a running scoring
  run has picked and not yet written. The primary key lets one run hold an image at a time; the
  claim is written in the transaction that picks the batch and deleted in the one that writes
  the batch's results.
- ``runs.heartbeat_at``: refreshed every few seconds by a running scoring run. A run whose
  heartbeat is older than the claim lease (``MLC_SCORING__CLAIM_LEASE_SECONDS``) is dead, and
  its claims may be taken over.

Revision ID: 73a9234e8f88
Revises: 41b5a24d80ff
Create Date: 2026-11-29 21:40:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "73a9234e8f88"
down_revision: str | None = "41b5a24d80ff"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column needs no table rebuild on SQLite.
    op.add_column("runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "score_claims",
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_score_claims_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_score_claims_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_score_claims_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("image_id", "model_version_id", name=op.f("pk_score_claims")),
    )
    op.create_index("ix_score_claims_run_id", "score_claims", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_score_claims_run_id", table_name="score_claims")
    op.drop_table("score_claims")
    # SQLite 3.35+ drops a column in place; Alembic's batch mode would rebuild ``runs``, and
    # with foreign keys on, dropping the old table would null every ``scores.run_id``.
    op.execute("ALTER TABLE runs DROP COLUMN heartbeat_at")
