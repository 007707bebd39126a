"""Reading and writing mlc's tables.

Every function takes a :class:`~sqlalchemy.orm.Session` and never commits: the caller owns the
transaction (``with Session(engine) as session, session.begin(): ...``). Bulk writes are one
statement executed with a list of rows (SQLAlchemy's insertmanyvalues / executemany), never a
round trip per row, and repeated writes are no-ops, so a rerun after a crash is safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from mlc_core.db.models import (
    Image,
    ImageTag,
    Label,
    ModelVersion,
    Score,
    utc_now,
)
from mlc_core.db.statements import chunks, dialect_insert, insert_ignoring_conflicts


@dataclass(frozen=True)
class LabelRecord:
    """A ground-truth statement: ``tag`` is present on the image (``positive``) or absent."""

    image_uri: str
    tag: str
    positive: bool
    source: str


@dataclass(frozen=True)
class ImageRecord:
    """One object as the store lists it."""

    uri: str
    etag: str
    size: int
    modified_at: datetime | None


@dataclass(frozen=True)
class ScoreRecord:
    """The outcome of scoring one image version: all probabilities and the tags they give.

    ``probabilities`` are in the order of the model version's classes; ``tags`` are the
    ``(class name, probability)`` pairs at or above the class threshold.
    """

    image_id: int
    probabilities: Sequence[float]
    tags: Sequence[tuple[str, float]]


@dataclass(frozen=True)
class TaggedImage:
    """The current version of an image with all its tags under the champion model."""

    uri: str
    tags: dict[str, float]
    model_version: str


def upsert_labels(session: Session, labels: Sequence[LabelRecord]) -> int:
    """Insert new labels and update changed ones, keyed by ``(image_uri, tag)``.

    When ``labels`` holds the same ``(image_uri, tag)`` twice, the later one wins. A label that
    is already stored with the same ``positive`` and ``source`` is left untouched, so its
    ``updated_at`` keeps saying when it last changed.

    Returns:
        The number of rows inserted or changed (0 when importing the same labels again).
    """
    latest = {(label.image_uri, label.tag): label for label in labels}
    if not latest:
        return 0
    now = utc_now()
    rows = [
        {
            "image_uri": label.image_uri,
            "tag": label.tag,
            "positive": label.positive,
            "source": label.source,
            "updated_at": now,
        }
        for label in latest.values()
    ]
    insert = dialect_insert(session, Label)
    statement = insert.on_conflict_do_update(
        index_elements=["image_uri", "tag"],
        set_={
            "positive": insert.excluded.positive,
            "source": insert.excluded.source,
            "updated_at": insert.excluded.updated_at,
        },
        where=or_(
            Label.positive != insert.excluded.positive, Label.source != insert.excluded.source
        ),
    ).returning(Label.id)
    return len(session.execute(statement, rows).all())


def labels_by_image(session: Session) -> dict[str, dict[str, bool]]:
    """All labels: image URI -> {tag: positive}."""
    labels: dict[str, dict[str, bool]] = {}
    for image_uri, tag, positive in session.execute(
        select(Label.image_uri, Label.tag, Label.positive).order_by(Label.image_uri, Label.tag)
    ):
        labels.setdefault(image_uri, {})[tag] = positive
    return labels


def _image_ids(session: Session, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    wanted = set(pairs)
    uris = sorted({uri for uri, _ in wanted})
    found: dict[tuple[str, str], int] = {}
    for chunk in chunks(uris):
        for image_id, uri, etag in session.execute(
            select(Image.id, Image.uri, Image.etag).where(Image.uri.in_(chunk))
        ):
            if (uri, etag) in wanted:
                found[(uri, etag)] = image_id
    return found


def register_images(session: Session, images: Sequence[ImageRecord]) -> dict[tuple[str, str], int]:
    """Record the listed objects as the current versions of their URIs.

    A ``(uri, etag)`` not seen before becomes a new image row (status ``new``); one already
    known is left as it is. Every other version of the same URI is marked superseded (from now
    on), and a listed version that had been superseded becomes current again (the object was
    restored). When one URI is listed with two etags, the later record is the current one.

    Returns:
        ``(uri, etag) -> images.id`` for every given record.
    """
    records = list({(image.uri, image.etag): image for image in images}.values())
    if not records:
        return {}
    now = utc_now()
    ids = _image_ids(session, [(record.uri, record.etag) for record in records])
    missing = [record for record in records if (record.uri, record.etag) not in ids]
    if missing:
        # Only the missing rows are sent: on PostgreSQL every conflicting row of an
        # INSERT ... ON CONFLICT still uses up a sequence number. The conflict clause covers a
        # concurrent run registering the same object meanwhile.
        session.execute(
            insert_ignoring_conflicts(session, Image, ["uri", "etag"]),
            [
                {
                    "uri": record.uri,
                    "etag": record.etag,
                    "size": record.size,
                    "modified_at": record.modified_at,
                    "first_seen_at": now,
                    "status": "new",
                }
                for record in missing
            ],
        )
        ids.update(_image_ids(session, [(record.uri, record.etag) for record in missing]))
    current = {record.uri: ids[(record.uri, record.etag)] for record in records}
    for chunk in chunks(list(current.items())):
        uris = [uri for uri, _ in chunk]
        current_ids = [image_id for _, image_id in chunk]
        session.execute(
            update(Image)
            .where(Image.id.in_(current_ids), Image.superseded_at.is_not(None))
            .values(superseded_at=None)
        )
        session.execute(
            update(Image)
            .where(
                Image.uri.in_(uris),
                Image.id.not_in(current_ids),
                Image.superseded_at.is_(None),
            )
            .values(superseded_at=now)
        )
    return ids


def write_scores(
    session: Session, model_version_id: int, run_id: int | None, rows: Sequence[ScoreRecord]
) -> int:
    """Store the probabilities and tags of scored images under one model version.

    An image already scored by this model version is skipped entirely (its probabilities and
    tags stay as first written), so a rerun writes nothing twice. Every given image is marked
    ``scored`` and loses any earlier failure.

    Returns:
        The number of score rows actually inserted (0 for a repeat).
    """
    latest = {row.image_id: row for row in rows}
    if not latest:
        return 0
    now = utc_now()
    statement = insert_ignoring_conflicts(session, Score, ["image_id", "model_version_id"])
    inserted = set(
        session.scalars(
            statement.returning(Score.image_id),
            [
                {
                    "image_id": row.image_id,
                    "model_version_id": model_version_id,
                    # float() also turns numpy scalars into something JSON can hold.
                    "probabilities": [float(value) for value in row.probabilities],
                    "scored_at": now,
                    "run_id": run_id,
                }
                for row in latest.values()
            ],
        ).all()
    )
    tags = {
        (image_id, tag): float(probability)
        for image_id in inserted
        for tag, probability in latest[image_id].tags
    }
    if tags:
        session.execute(
            insert_ignoring_conflicts(session, ImageTag, ["image_id", "model_version_id", "tag"]),
            [
                {
                    "image_id": image_id,
                    "model_version_id": model_version_id,
                    "tag": tag,
                    "probability": probability,
                }
                for (image_id, tag), probability in tags.items()
            ],
        )
    for chunk in chunks(list(latest)):
        session.execute(
            update(Image)
            .where(Image.id.in_(chunk))
            .values(status="scored", error=None, failed_at=None)
        )
    return len(inserted)


def record_failures(session: Session, failures: Sequence[tuple[int, str]]) -> None:
    """Mark images as failed with the reason (a sentence for people) and the time.

    Args:
        failures: ``(images.id, reason)`` pairs; for a repeated id the later reason wins.
    """
    reasons = dict(failures)
    if not reasons:
        return
    now = utc_now()
    session.execute(
        update(Image),
        [
            {"id": image_id, "status": "failed", "error": reason, "failed_at": now}
            for image_id, reason in reasons.items()
        ],
    )


def find_images_with_tags(
    session: Session, tags: Sequence[str], *, limit: int = 100
) -> list[TaggedImage]:
    """Current image versions that carry every one of ``tags`` under the champion model.

    Tags are compared exactly (they are stored normalized; see ``mlc_core.labels``). Without a
    champion nothing is tagged, so the result is empty.

    Returns:
        At most ``limit`` images ordered by URI, each with all its tags (highest probability
        first), not only the requested ones.

    Raises:
        ValueError: ``tags`` is empty or ``limit`` is below 1.
    """
    wanted = sorted(set(tags))
    if not wanted:
        raise ValueError("expected at least one tag to search for")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    champion = session.execute(
        select(ModelVersion.id, ModelVersion.version).where(ModelVersion.status == "champion")
    ).one_or_none()
    if champion is None:
        return []
    champion_id, champion_version = champion
    with_all_tags = (
        select(ImageTag.image_id)
        .where(ImageTag.model_version_id == champion_id, ImageTag.tag.in_(wanted))
        .group_by(ImageTag.image_id)
        .having(func.count() == len(wanted))
    )
    images = session.execute(
        select(Image.id, Image.uri)
        .where(Image.id.in_(with_all_tags), Image.superseded_at.is_(None))
        .order_by(Image.uri, Image.id)
        .limit(limit)
    ).all()
    if not images:
        return []
    tags_by_image: dict[int, dict[str, float]] = {image_id: {} for image_id, _ in images}
    for image_id, tag, probability in session.execute(
        select(ImageTag.image_id, ImageTag.tag, ImageTag.probability)
        .where(
            ImageTag.model_version_id == champion_id,
            ImageTag.image_id.in_(list(tags_by_image)),
        )
        .order_by(ImageTag.image_id, ImageTag.probability.desc(), ImageTag.tag)
    ):
        tags_by_image[image_id][tag] = probability
    return [
        TaggedImage(uri=uri, tags=tags_by_image[image_id], model_version=champion_version)
        for image_id, uri in images
    ]
