"""Reading and writing mlc's tables.

Every function takes a :class:`~sqlalchemy.orm.Session` and never commits: the caller owns the
transaction (``with Session(engine) as session, session.begin(): ...``). Bulk writes are one
statement executed with a list of rows (SQLAlchemy's insertmanyvalues / executemany), never a
round trip per row, and repeated writes are no-ops, so a rerun after a crash is safe.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mlc_core.db.models import (
    RUN_KINDS,
    RUN_STATUSES,
    Base,
    Image,
    ImageTag,
    Label,
    ModelVersion,
    Run,
    Score,
    utc_now,
)
from mlc_core.errors import DatabaseError

# Bound parameters per IN list: far below SQLite's (32766) and PostgreSQL's (65535) limits.
_CHUNK_SIZE = 1000
_VERSION_NAME = re.compile(r"v(\d+)")

_T = TypeVar("_T")
_M = TypeVar("_M", bound=Base)


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


def _chunks(items: Sequence[_T], size: int = _CHUNK_SIZE) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _dialect_insert(session: Session, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """An INSERT with the dialect's ON CONFLICT support for the session's database."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise DatabaseError(f"mlc supports SQLite and PostgreSQL databases, not {dialect}")


def _insert_ignoring_conflicts(
    session: Session, model: type[Base], conflict_columns: Sequence[str]
) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that skips rows colliding with ``conflict_columns``' unique constraint."""
    return _dialect_insert(session, model).on_conflict_do_nothing(index_elements=conflict_columns)


def _in_session(session: Session, instance: _M) -> _M:
    # Callers often hold an object from an earlier, committed transaction (a run started in
    # one session and finished in another); merge gives the copy this session tracks.
    if instance in session:
        return instance
    return session.merge(instance)


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
    insert = _dialect_insert(session, Label)
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
    for chunk in _chunks(uris):
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
            _insert_ignoring_conflicts(session, Image, ["uri", "etag"]),
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
    for chunk in _chunks(list(current.items())):
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
    statement = _insert_ignoring_conflicts(session, Score, ["image_id", "model_version_id"])
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
            _insert_ignoring_conflicts(session, ImageTag, ["image_id", "model_version_id", "tag"]),
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
    for chunk in _chunks(list(latest)):
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


def create_model_version(
    session: Session,
    *,
    version: str,
    classes: list[str],
    thresholds: list[float],
    metrics: dict[str, Any],
    backbone: str,
    image_size: int,
    artifact_uri: str,
    artifact_sha256: str,
    card_uri: str,
) -> ModelVersion:
    """Record a trained model as a ``candidate`` and return it (with its id).

    Raises:
        ValueError: ``classes`` and ``thresholds`` differ in length.
    """
    if len(classes) != len(thresholds):
        raise ValueError(
            f"model version {version} has {len(classes)} classes but {len(thresholds)} "
            "thresholds; expected one threshold per class"
        )
    model_version = ModelVersion(
        version=version,
        status="candidate",
        classes=list(classes),
        thresholds=[float(threshold) for threshold in thresholds],
        threshold_overrides={},
        metrics=metrics,
        backbone=backbone,
        image_size=image_size,
        artifact_uri=artifact_uri,
        artifact_sha256=artifact_sha256,
        card_uri=card_uri,
    )
    session.add(model_version)
    session.flush()
    return model_version


def next_version_name(session: Session) -> str:
    """The name for the next model version: ``v1``, ``v2``, ... (highest existing + 1)."""
    numbers = [
        int(match.group(1))
        for version in session.scalars(select(ModelVersion.version))
        if (match := _VERSION_NAME.fullmatch(version))
    ]
    return f"v{max(numbers, default=0) + 1}"


def get_champion(session: Session) -> ModelVersion | None:
    """The model version that scores images, or ``None`` before the first promotion."""
    return session.scalars(
        select(ModelVersion).where(ModelVersion.status == "champion")
    ).one_or_none()


def get_model_version(session: Session, version: str) -> ModelVersion | None:
    """The model version named ``version`` (e.g. ``"v3"``), or ``None``."""
    return session.scalars(
        select(ModelVersion).where(ModelVersion.version == version)
    ).one_or_none()


def list_model_versions(session: Session) -> list[ModelVersion]:
    """All model versions, newest first."""
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())))


def promote_model_version(session: Session, model_version: ModelVersion, decision: str) -> None:
    """Make ``model_version`` the champion and retire the previous one.

    Args:
        model_version: the version to promote; it may come from another (closed) session.
        decision: why it was promoted, kept with the version.
    """
    model_version = _in_session(session, model_version)
    champion = get_champion(session)
    if champion is not None and champion.id != model_version.id:
        champion.status = "retired"
        # The partial unique index allows one champion: the old one must be retired in the
        # database before the new one is written.
        session.flush()
    model_version.status = "champion"
    model_version.promoted_at = utc_now()
    model_version.decision = decision
    session.flush()


def set_decision(session: Session, model_version: ModelVersion, decision: str) -> None:
    """Record why a candidate was not promoted (or any other verdict on it)."""
    model_version = _in_session(session, model_version)
    model_version.decision = decision
    session.flush()


def override_threshold(
    session: Session, model_version: ModelVersion, class_name: str, threshold: float
) -> float:
    """Set one class's threshold by hand, recording the override and the value it replaced.

    Stored tag sets keep the old threshold until ``retag`` recomputes them.

    Returns:
        The threshold the class had before.

    Raises:
        ValueError: the class is not in this version's class list, or the threshold is not in
            (0, 1].
    """
    model_version = _in_session(session, model_version)
    if class_name not in model_version.classes:
        raise ValueError(
            f"model {model_version.version} has no class {class_name!r}; its classes are "
            f"{', '.join(model_version.classes)}"
        )
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold {threshold} is outside (0, 1]")
    position = model_version.classes.index(class_name)
    thresholds = list(model_version.thresholds)
    previous = float(thresholds[position])
    thresholds[position] = float(threshold)
    overrides = dict(model_version.threshold_overrides or {})
    overrides[class_name] = {
        "threshold": float(threshold),
        "calibrated": float(overrides.get(class_name, {}).get("calibrated", previous)),
        "set_at": utc_now().isoformat(),
    }
    # New lists/dicts, so the ORM sees the JSON columns change.
    model_version.thresholds = thresholds
    model_version.threshold_overrides = overrides
    session.flush()
    return previous


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


def start_run(session: Session, kind: str, parameters: dict[str, Any]) -> Run:
    """Record the start of a job and return its run (with its id).

    Raises:
        ValueError: ``kind`` is not one of ``RUN_KINDS``.
    """
    if kind not in RUN_KINDS:
        raise ValueError(f"unknown run kind {kind!r}; expected one of {', '.join(RUN_KINDS)}")
    run = Run(kind=kind, status="running", started_at=utc_now(), parameters=parameters, counts={})
    session.add(run)
    session.flush()
    return run


def finish_run(
    session: Session,
    run: Run,
    *,
    status: str,
    counts: dict[str, Any],
    error: str | None = None,
    model_version_id: int | None = None,
) -> None:
    """Record how a run ended, what it counted and, for a failure, why.

    Args:
        run: the run from :func:`start_run`; it may come from another (closed) session.
        status: ``succeeded`` or ``failed``.
        model_version_id: the model version the run trained or scored with; when ``None``,
            whatever was recorded before stays.

    Raises:
        ValueError: ``status`` is not a final run status.
    """
    final_statuses = [final for final in RUN_STATUSES if final != "running"]
    if status not in final_statuses:
        raise ValueError(
            f"cannot finish a run with status {status!r}; expected one of "
            f"{', '.join(final_statuses)}"
        )
    run = _in_session(session, run)
    run.status = status
    run.finished_at = utc_now()
    run.counts = counts
    run.error = error
    if model_version_id is not None:
        run.model_version_id = model_version_id
    session.flush()
