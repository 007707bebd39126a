"""The stored results of one model version, as re-tagging and re-scoring read and replace them:
probabilities, tag sets and the thresholds that turn one into the other.

Functions take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mlc_core.db.models import ImageTag, ModelVersion, Score
from mlc_core.db.statements import chunks, insert_ignoring_conflicts


@dataclass(frozen=True)
class StoredScore:
    """One row of ``scores`` as re-tagging reads it."""

    score_id: int
    image_id: int
    probabilities: list[float]


def current_thresholds(session: Session, model_version_id: int) -> list[float]:
    """The model version's thresholds as they are now (they may change while a run works)."""
    thresholds = session.scalar(
        select(ModelVersion.thresholds).where(ModelVersion.id == model_version_id)
    )
    return [float(value) for value in thresholds or []]


def delete_scores(session: Session, *, model_version_id: int, image_ids: Sequence[int]) -> None:
    """Remove one model version's scores and tags of these images (before re-scoring them)."""
    if not image_ids:
        return
    session.execute(
        delete(ImageTag).where(
            ImageTag.model_version_id == model_version_id, ImageTag.image_id.in_(image_ids)
        )
    )
    session.execute(
        delete(Score).where(
            Score.model_version_id == model_version_id, Score.image_id.in_(image_ids)
        )
    )


def stored_scores(
    session: Session, model_version_id: int, *, after_id: int, limit: int
) -> list[StoredScore]:
    """The next ``limit`` score rows of a model version with ids above ``after_id``."""
    rows = session.execute(
        select(Score.id, Score.image_id, Score.probabilities)
        .where(Score.model_version_id == model_version_id, Score.id > after_id)
        .order_by(Score.id)
        .limit(limit)
    )
    return [
        StoredScore(score_id, image_id, [float(p) for p in probabilities])
        for score_id, image_id, probabilities in rows
    ]


def stored_tags(
    session: Session, model_version_id: int, image_ids: Sequence[int]
) -> dict[int, set[str]]:
    """The stored tag sets of these images under one model version (absent: no tags)."""
    tags: dict[int, set[str]] = {}
    for chunk in chunks(list(image_ids)):
        for image_id, tag in session.execute(
            select(ImageTag.image_id, ImageTag.tag).where(
                ImageTag.model_version_id == model_version_id, ImageTag.image_id.in_(chunk)
            )
        ):
            tags.setdefault(image_id, set()).add(tag)
    return tags


def replace_tags(
    session: Session,
    model_version_id: int,
    tags_by_image: Mapping[int, Sequence[tuple[str, float]]],
) -> None:
    """Make each image's tag set under the model version exactly the given one, in bulk."""
    if not tags_by_image:
        return
    for chunk in chunks(list(tags_by_image)):
        session.execute(
            delete(ImageTag).where(
                ImageTag.model_version_id == model_version_id, ImageTag.image_id.in_(chunk)
            )
        )
    rows = [
        {
            "image_id": image_id,
            "model_version_id": model_version_id,
            "tag": tag,
            "probability": float(probability),
        }
        for image_id, tags in tags_by_image.items()
        for tag, probability in tags
    ]
    if rows:
        session.execute(
            insert_ignoring_conflicts(session, ImageTag, ["image_id", "model_version_id", "tag"]),
            rows,
        )
