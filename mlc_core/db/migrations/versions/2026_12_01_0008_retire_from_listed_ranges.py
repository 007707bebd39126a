"""Discovery marks only what a listing did not show, in byte order of the keys.

Why this revision exists: to tell which known images a complete listing did not show, every
nightly discovery wrote ``images.listed_at`` on every row it listed: at 200,000 known objects
that ``UPDATE`` was most of a no-op night's 45-71 s. Discovery now compares each page with the
registered rows of the key range the page covers (listings come in byte order of the keys)
and writes only the rows the page did not show.

- ``images.unlisted_at``: the start of the last listing that did not show the version in the
  range its pages covered; a complete listing retires the ones it marked.
- ``images.listed_at`` is dropped: nothing writes it any more.
- ``ix_images_uri_bytes`` (PostgreSQL): the URIs in byte order (``COLLATE "C"``), the order
  the ranges are read in; the index on ``uri`` follows the database's locale, which in most
  databases is not byte order, so it cannot serve those ranges. SQLite compares text in byte
  order already (its index on ``uri`` serves them).

Revision ID: 4b8e2d6f1c93
Revises: 5d2f8a3c1e90
Create Date: 2026-12-01 16:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4b8e2d6f1c93"
down_revision: str | None = "5d2f8a3c1e90"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("images", sa.Column("unlisted_at", sa.DateTime(timezone=True), nullable=True))
    # SQLite 3.35+ drops a column in place (see the score claims revision for why not batch).
    op.execute("ALTER TABLE images DROP COLUMN listed_at")
    if op.get_bind().dialect.name == "postgresql":
        op.execute('CREATE INDEX ix_images_uri_bytes ON images (uri COLLATE "C")')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_images_uri_bytes")
    # The listing that follows the downgrade marks every image it shows again.
    op.add_column("images", sa.Column("listed_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("ALTER TABLE images DROP COLUMN unlisted_at")
