"""Scores and tags: what a model version said about an image version.

``scores`` keeps one row per image version and model version with every class's probability
(a JSON array in the order of ``model_versions.classes``); ``image_tags`` keeps the classes at
or above their threshold, the long table people filter on. Both are written together, read
back together, and rewritten from the stored probabilities when thresholds change (retag).

Functions take a session and never commit; the caller owns the transaction. Bulk writes are
one statement executed with a list of rows, and a repeated write is a no-op, so a rerun after
a crash is safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from mlc_core.db._statements import chunks, insert_ignoring_conflicts, one_of
from mlc_core.db.engine import database_now
from mlc_core.db.images import current_image
from mlc_core.db.models import Image, ImageTag, ModelVersion, Score
from mlc_core.db.shown import refresh_shown_versions, shown_version_of_image
from mlc_core.db.shown_tags import refresh_shown_tags
from mlc_core.db.tag_changes import add_shares, shares_of


@dataclass(frozen=True)
class ImageScore:
    """One image version as one model version scored it, from the model to the row and back.

    Attributes:
        image_id: the image version (``images.id``).
        probabilities: one per class, in the order of the model version's classes.
        tags: ``(class, probability)`` for the classes at or above their threshold, most
            probable first; empty until the thresholds are applied.
    """

    image_id: int
    probabilities: tuple[float, ...]
    tags: tuple[tuple[str, float], ...] = field(default=())


def write_scores(
    session: Session, model_version_id: int, run_id: int | None, scores: Sequence[ImageScore]
) -> int:
    """Store the probabilities and tags of scored images under one model version.

    An image already scored by this model version is skipped entirely (its probabilities and
    tags stay as first written), so a rerun writes nothing twice. Every given image is marked
    ``scored`` and loses any earlier failure.

    Returns:
        The number of score rows actually inserted (0 for a repeat).
    """
    latest = {score.image_id: score for score in scores}
    if not latest:
        return 0
    now = database_now(session)
    statement = insert_ignoring_conflicts(session, Score, ["image_id", "model_version_id"])
    inserted = set(
        session.scalars(
            statement.returning(Score.image_id),
            [
                {
                    "image_id": score.image_id,
                    "model_version_id": model_version_id,
                    # float() also turns numpy scalars into something JSON can hold.
                    "probabilities": [float(value) for value in score.probabilities],
                    "scored_at": now,
                    "run_id": run_id,
                }
                for score in latest.values()
            ],
        ).all()
    )
    _insert_tags(session, model_version_id, {i: latest[i].tags for i in inserted})
    # What changed between versions (mlc_core.db.tag_changes): an image this version had not
    # scored had no share of its pairs before; one it had scored is left as it was. So the
    # shares of the inserted images after the write are the whole change.
    if inserted:
        add_shares(session, {}, shares_of(session, sorted(inserted), model_version_id))
    for chunk in chunks(list(latest)):
        session.execute(
            update(Image)
            .where(Image.id.in_(chunk))
            .values(
                status="scored",
                error=None,
                failed_at=None,
                shown_model_version_id=shown_version_of_image(),
            )
        )
    refresh_shown_tags(session, list(latest))
    return len(inserted)


def _insert_tags(
    session: Session,
    model_version_id: int,
    tags_by_image: Mapping[int, Sequence[tuple[str, float]]],
) -> None:
    rows = [
        {
            "image_id": image_id,
            "model_version_id": model_version_id,
            "tag": tag,
            "probability": float(probability),
        }
        for image_id, tags in tags_by_image.items()
        for tag, probability in dict(tags).items()
    ]
    if rows:
        session.execute(
            insert_ignoring_conflicts(session, ImageTag, ["image_id", "model_version_id", "tag"]),
            rows,
        )


def delete_scores(session: Session, *, model_version_id: int, image_ids: Sequence[int]) -> None:
    """Remove one model version's scores and tags of these images (before re-scoring them)."""
    shares_before = shares_of(session, image_ids, model_version_id)
    for chunk in chunks(list(image_ids)):
        session.execute(
            delete(ImageTag).where(
                ImageTag.model_version_id == model_version_id, ImageTag.image_id.in_(chunk)
            )
        )
        session.execute(
            delete(Score).where(
                Score.model_version_id == model_version_id, Score.image_id.in_(chunk)
            )
        )
    add_shares(session, shares_before, {})
    refresh_shown_versions(session, image_ids)


def replace_tags(
    session: Session,
    model_version_id: int,
    tags_by_image: Mapping[int, Sequence[tuple[str, float]]],
) -> None:
    """Make each image's tag set under the model version exactly the given one, in bulk."""
    shares_before = shares_of(session, list(tags_by_image), model_version_id)
    for chunk in chunks(list(tags_by_image)):
        session.execute(
            delete(ImageTag).where(
                ImageTag.model_version_id == model_version_id, ImageTag.image_id.in_(chunk)
            )
        )
    _insert_tags(session, model_version_id, tags_by_image)
    add_shares(session, shares_before, shares_of(session, list(tags_by_image), model_version_id))
    refresh_shown_tags(session, list(tags_by_image))


def current_thresholds(session: Session, model_version_id: int) -> list[float]:
    """The model version's thresholds as they are now (they may change while a run works)."""
    thresholds = session.scalar(
        select(ModelVersion.thresholds).where(ModelVersion.id == model_version_id)
    )
    return [float(value) for value in thresholds or []]


def count_scores(session: Session, model_version_id: int) -> int:
    """How many score rows a model version has."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Score)
            .where(Score.model_version_id == model_version_id)
        )
        or 0
    )


def _with_tags(
    session: Session, model_version_id: int, rows: Sequence[tuple[int, list[float]]]
) -> list[ImageScore]:
    """The given ``(image id, probabilities)`` rows as scores, each with its stored tags."""
    tags: dict[int, list[tuple[str, float]]] = {image_id: [] for image_id, _ in rows}
    for chunk in chunks(list(tags)):
        for image_id, tag, probability in session.execute(
            select(ImageTag.image_id, ImageTag.tag, ImageTag.probability)
            .where(ImageTag.model_version_id == model_version_id, ImageTag.image_id.in_(chunk))
            .order_by(ImageTag.image_id, ImageTag.probability.desc(), ImageTag.tag)
        ):
            tags[image_id].append((tag, float(probability)))
    return [
        ImageScore(image_id, tuple(float(p) for p in probabilities), tuple(tags[image_id]))
        for image_id, probabilities in rows
    ]


def stored_scores(
    session: Session, model_version_id: int, *, after_image_id: int, limit: int
) -> list[ImageScore]:
    """The next ``limit`` scores of a model version, by image id above ``after_image_id``."""
    rows = session.execute(
        select(Score.image_id, Score.probabilities)
        .where(Score.model_version_id == model_version_id, Score.image_id > after_image_id)
        .order_by(Score.image_id)
        .limit(limit)
    ).all()
    return _with_tags(session, model_version_id, [(i, p) for i, p in rows])


def scores_for_uris(
    session: Session, model_version_id: int, uris: Sequence[str]
) -> dict[str, ImageScore]:
    """One model version's scores of the current versions of ``uris``, by URI."""
    found: dict[str, ImageScore] = {}
    for chunk in chunks(list(uris)):
        rows = session.execute(
            select(Image.id, Image.uri, Score.probabilities)
            .join(Score, Score.image_id == Image.id)
            .where(
                one_of(session, Image.uri, chunk),
                current_image(),
                Score.model_version_id == model_version_id,
            )
        ).all()
        uri_of = {image_id: uri for image_id, uri, _ in rows}
        scored = _with_tags(session, model_version_id, [(i, p) for i, _, p in rows])
        found.update({uri_of[score.image_id]: score for score in scored})
    return found
