"""Initial schema: the tables of mlc and the three views people query.

Why this revision exists: it creates everything the first release of mlc needs, on SQLite and
PostgreSQL alike.

Tables (see ``mlc_core/db/models.py`` for why they look like this): ``images`` (one row per
version of an object, ``(uri, etag)`` unique), ``labels``, ``model_versions`` (at most one
``champion``, enforced by a partial unique index), ``runs``, ``scores`` (one JSON array of
probabilities per image version and model version, in the order of ``model_versions.classes``)
and ``image_tags`` (the tags at or above threshold).

Views, all about the current version of each image (``images.superseded_at IS NULL``) under the
champion model (``model_versions.status = 'champion'``); ``model_version`` is
``model_versions.version``:

- ``current_tags(image_uri, tag, probability, model_version)``: the tags of each image.
- ``current_scores(image_uri, class_name, probability, model_version)``: every class's
  probability, the long form of ``scores.probabilities``.
- ``scoring_failures(image_uri, error, failed_at)``: images that could not be scored.

Revision ID: 41b5a24d80ff
Revises:
Create Date: 2026-11-29 19:11:11+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mlc_core.db.views import create_views, drop_views

revision: str = "41b5a24d80ff"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("uri", sa.String(length=2048), nullable=False),
        sa.Column("etag", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="new", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('new', 'scored', 'failed')", name=op.f("ck_images_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("uri", "etag", name=op.f("uq_images_uri_etag")),
    )
    op.create_index("ix_images_status", "images", ["status"])
    op.create_index(op.f("ix_images_uri"), "images", ["uri"])

    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_uri", sa.String(length=2048), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("positive", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labels")),
        sa.UniqueConstraint("image_uri", "tag", name=op.f("uq_labels_image_uri_tag")),
    )
    op.create_index(op.f("ix_labels_image_uri"), "labels", ["image_uri"])

    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("threshold_overrides", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("backbone", sa.String(length=64), nullable=False),
        sa.Column("image_size", sa.Integer(), nullable=False),
        sa.Column("artifact_uri", sa.String(length=2048), nullable=False),
        sa.Column("artifact_sha256", sa.String(length=64), nullable=False),
        sa.Column("card_uri", sa.String(length=2048), nullable=False),
        sa.Column("decision", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('champion', 'candidate', 'retired')", name=op.f("ck_model_versions_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("version", name=op.f("uq_model_versions_version")),
    )
    # At most one champion: a unique index over the rows whose status is 'champion'.
    op.create_index(
        "uq_model_versions_one_champion",
        "model_versions",
        ["status"],
        unique=True,
        sqlite_where=sa.text("status = 'champion'"),
        postgresql_where=sa.text("status = 'champion'"),
    )

    op.create_table(
        "image_tags",
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_image_tags_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_image_tags_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("image_id", "model_version_id", "tag", name=op.f("pk_image_tags")),
    )
    op.create_index("ix_image_tags_model_version_id_tag", "image_tags", ["model_version_id", "tag"])

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('import_labels', 'train', 'score', 'retag')", name=op.f("ck_runs_kind")
        ),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name=op.f("ck_runs_status")
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_runs_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )

    op.create_table(
        "scores",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_scores_image_id_images"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_scores_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_scores_run_id_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scores")),
        sa.UniqueConstraint(
            "image_id", "model_version_id", name=op.f("uq_scores_image_id_model_version_id")
        ),
    )
    op.create_index(op.f("ix_scores_model_version_id"), "scores", ["model_version_id"])

    create_views(op, version=1)


def downgrade() -> None:
    drop_views(op, version=1)
    op.drop_index(op.f("ix_scores_model_version_id"), table_name="scores")
    op.drop_table("scores")
    op.drop_table("runs")
    op.drop_index("ix_image_tags_model_version_id_tag", table_name="image_tags")
    op.drop_table("image_tags")
    op.drop_index("uq_model_versions_one_champion", table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_index(op.f("ix_labels_image_uri"), table_name="labels")
    op.drop_table("labels")
    op.drop_index(op.f("ix_images_uri"), table_name="images")
    op.drop_index("ix_images_status", table_name="images")
    op.drop_table("images")
