"""Run locks: jobs that must not overlap hold a lock row with a heartbeat.

Why this revision exists: scoring runs over one prefix and trainings were kept apart by
Prefect global concurrency slots, whose leases live in the memory of the Prefect server. On
the embedded defaults that server is a temporary one that dies with the command, so a
``kill -9`` of ``mlc score`` left its slot taken for good and every later run waited forever.
A lock in mlc's own database knows its holder's heartbeat: a lock silent for longer than the
lease (``MLC_SCORING__CLAIM_LEASE_SECONDS``) is taken over by the next job.

- ``run_locks(name, holder, description, run_id, acquired_at, heartbeat_at)``: one row per
  lock held; ``run_id`` names the run it guards, ended as failed when a dead holder's lock is
  taken over.

Revision ID: 5c1e0b7f3a21
Revises: 73a9234e8f88
Create Date: 2026-12-01 09:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c1e0b7f3a21"
down_revision: str | None = "73a9234e8f88"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_locks",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_locks_run_id_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_run_locks")),
    )


def downgrade() -> None:
    op.drop_table("run_locks")
