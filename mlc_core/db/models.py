"""Typed ORM models: the tables mlc keeps.

Design notes (why the tables look like this):
- An image row is one *version* of an object: ``(uri, etag)`` is unique, so a changed object is
  a new row that gets scored again, and the older row is marked ``superseded_at``.
- The probabilities of one image under one model version are one row (a JSON array in the
  order of ``model_versions.classes``), so a night of 10 M images x 20 classes writes 10 M rows,
  not 200 M. Only the tags above threshold get a long table (``image_tags``), which is what
  people filter on. The views ``current_scores`` / ``current_tags`` present the long form
  (they and ``scoring_failures`` are created by the migrations; see ``mlc_core.db``).
- Unique constraints on ``scores(image_id, model_version_id)`` and the primary key of
  ``image_tags`` make a repeated write a no-op: reruns are idempotent.
- Jobs that must not overlap (a scoring run over one prefix, a training) hold a row of
  ``run_locks`` while they work and refresh its heartbeat; a lock whose heartbeat is older than
  the lease belongs to a dead process and is taken over, so no crash blocks later runs.
- A scoring run claims the images it is about to score (``score_claims``) in the transaction
  that picks them, and keeps ``runs.heartbeat_at`` fresh while it works; concurrent runs skip
  claimed images, and a run whose heartbeat is older than the lease is dead, so its claims can
  be taken over. Claims live only while a batch is in flight.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

IMAGE_STATUSES = ("new", "scored", "failed")
MODEL_STATUSES = ("champion", "candidate", "retired")
RUN_STATUSES = ("running", "succeeded", "failed")
RUN_KINDS = ("import_labels", "train", "score", "retag")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Image(Base):
    """One version of one object in the store: a new etag is a new row."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("uri", "etag"),
        CheckConstraint(f"status IN {IMAGE_STATUSES}", name="status"),
        Index("ix_images_status", "status"),
        # The URIs in byte order, as listings sort keys (mlc_core.db.unlisted): the index on
        # uri follows the database's locale. SQLite's index on uri is in byte order already.
        Index(
            "ix_images_uri_bytes",
            "uri",
            postgresql_ops={"uri": 'COLLATE "C"'},
            info={"dialect": "postgresql"},
        ).ddl_if(dialect="postgresql"),
    )

    # 10 M new images a night outgrow a 32-bit id within a year on PostgreSQL; SQLite needs
    # INTEGER for its rowid primary key (which is 64-bit anyway).
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    uri: Mapped[str] = mapped_column(String(2048), index=True)
    etag: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    modified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="new", server_default="new")
    error: Mapped[str | None] = mapped_column(Text)
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The object is gone from the store: a read found it missing, or a complete listing of
    # its prefix did not show it. Retired rows leave the views and keep their history.
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The start (on the database's clock) of the last listing that did not show this version
    # in the key range its pages covered; a complete listing retires the versions it marked
    # (see mlc_core.db.unlisted). A listing writes nothing for the versions it shows.
    unlisted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # How often claims on this image were taken over from runs that died holding it.
    abandoned_claims: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The model version whose tags the views show for this image (see mlc_core.db.shown, which
    # keeps it): promoted, not rolled back, promoted most recently among those that scored it.
    # No foreign key: SQLite cannot drop a column that has one (the downgrade), and an id
    # that names no version simply joins nothing in the views.
    shown_model_version_id: Mapped[int | None] = mapped_column(Integer)


class Label(Base):
    """A person's statement about an image: ``tag`` is present (positive) or absent.

    ``complete`` says the statement came with the image's whole tag set (a labels file of
    ``key,tags``): every class it does not name is absent. A correction (``mlc labels set``, a
    corrections file, the web page) names only the tags it changes, and says nothing of the
    others. Labels win over models in the views, whatever any model says.
    """

    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("image_uri", "tag"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_uri: Mapped[str] = mapped_column(String(2048), index=True)
    tag: Mapped[str] = mapped_column(String(64))
    positive: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now, onupdate=utc_now
    )
    complete: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))


class ModelVersion(Base):
    """A trained model: its ordered classes, thresholds, metrics and where its file lives."""

    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint(f"status IN {MODEL_STATUSES}", name="status"),
        # At most one champion at any time, enforced by the database itself.
        Index(
            "uq_model_versions_one_champion",
            "status",
            unique=True,
            sqlite_where=text("status = 'champion'"),
            postgresql_where=text("status = 'champion'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="candidate")
    classes: Mapped[list[Any]] = mapped_column(JSON)
    thresholds: Mapped[list[Any]] = mapped_column(JSON)
    threshold_overrides: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    backbone: Mapped[str] = mapped_column(String(64))
    image_size: Mapped[int] = mapped_column(Integer)
    artifact_uri: Mapped[str] = mapped_column(String(2048))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    card_uri: Mapped[str] = mapped_column(String(2048))
    decision: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set when a rollback (promoting an older version) made this version step down: its tags
    # are shown nowhere until it is promoted again.
    rolled_back_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Run(Base):
    """One execution of a job, with what it counted."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(f"status IN {RUN_STATUSES}", name="status"),
        CheckConstraint(f"kind IN {RUN_KINDS}", name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    error: Mapped[str | None] = mapped_column(Text)
    # Written every few seconds by a running scoring run: how other runs tell it is alive.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Score(Base):
    """The probabilities of one image version under one model version, in class order."""

    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("image_id", "model_version_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    image_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("images.id", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    probabilities: Mapped[list[Any]] = mapped_column(JSON)
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))


class ImageTag(Base):
    """A tag at or above its class threshold for one image version under one model version."""

    __tablename__ = "image_tags"
    __table_args__ = (
        Index("ix_image_tags_model_version_id_tag", "model_version_id", "tag"),
        # "Images with this tag": the lookup people make most, from the tag to the images.
        Index("ix_image_tags_tag_image_id", "tag", "image_id"),
    )

    image_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    probability: Mapped[float] = mapped_column(Float)


class ShownTag(Base):
    """A tag people see on a current image: a row of the ``current_tags`` view, kept.

    The rule it holds (see :mod:`mlc_core.db.shown_tags`): the shown version's tags of the
    image, less those a label names, plus the tags positive labels add. Deciding that in the
    view meant a union, an anti-join with the labels and a join over every image for each
    lookup, which PostgreSQL planned as hash joins over the whole table (0.8-4 s for the first
    page of a tag at a million images); kept here, a lookup walks ``(tag, image_id)``.
    """

    __tablename__ = "shown_tags"
    __table_args__ = (Index("ix_shown_tags_tag_image_id", "tag", "image_id"),)

    image_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The shown version's probability of the tag; none on a human row where it did not tag it.
    probability: Mapped[float | None] = mapped_column(Float)
    # The version shown (none on a human row of an image that has none, or whose scoring failed).
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    # "model" or "human".
    source: Mapped[str] = mapped_column(String(8))


class TagChange(Base):
    """Per tag, how many images one version tags and an older one does not (``gained``), and
    the other way round (``lost``), over the images both scored: what changed between them.

    Kept by :mod:`mlc_core.db.tag_changes` in the transaction that writes, deletes or retags
    scores; counting it from ``image_tags`` reads every tag row of both versions (2.7-3.5 s at
    a million images on PostgreSQL), reading it here is one row per tag.
    """

    __tablename__ = "tag_changes"

    old_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    # Always a later version than old_version_id (a higher id).
    new_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    gained: Mapped[int] = mapped_column(Integer, default=0)
    lost: Mapped[int] = mapped_column(Integer, default=0)


class ScoreClaim(Base):
    """An image a running scoring run is reading, decoding or scoring under a model version.

    The primary key lets one run at a time hold an image; the row is deleted in the transaction
    that writes the image's result, so a claim only exists while its batch is in flight.
    """

    __tablename__ = "score_claims"
    __table_args__ = (Index("ix_score_claims_run_id", "run_id"),)

    image_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class RunLock(Base):
    """A named lock a job holds while it works, alive while its heartbeat is fresh.

    ``holder`` is a random id of one holding; a lock whose ``heartbeat_at`` is older than the
    lease belongs to a process that died or hung, and the next job to ask takes it over (and
    ends ``run_id``, the run it guarded, if that is still marked running).
    """

    __tablename__ = "run_locks"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
