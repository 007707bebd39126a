"""Which model version's tags people see for each image, kept on the image row.

The rule (see :mod:`mlc_core.db.views`): an image shows the score of the version promoted most
recently among the promoted, not rolled-back versions that scored it; the champion, where it
scored the image, since a promotion always stamps the newest ``promoted_at``. Evaluating that
rule inside the views made every tag lookup a join over all scores (1.4 s at 100,000 images on
PostgreSQL), so ``images.shown_model_version_id`` holds its outcome and the views join on it:
an index lookup per image. Everything that can change the outcome calls in here in the same
transaction: writing or deleting scores, and promoting a version (which may roll one back).

Functions take a session and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, ScalarSelect, exists, select, update
from sqlalchemy.orm import Session

from mlc_core.db._statements import chunks
from mlc_core.db.models import Image, ModelVersion, Score
from mlc_core.db.shown_tags import (
    refresh_all_shown_tags,
    refresh_shown_tags,
    refresh_shown_tags_where,
)


def shown_version_of_image() -> ScalarSelect[int]:
    """The version an image (the outer ``images`` row) should show, as a scalar subquery to
    set ``images.shown_model_version_id`` to."""
    return (
        select(Score.model_version_id)
        .join(ModelVersion, ModelVersion.id == Score.model_version_id)
        .where(
            Score.image_id == Image.id,
            ModelVersion.promoted_at.is_not(None),
            ModelVersion.rolled_back_at.is_(None),
        )
        .order_by(ModelVersion.promoted_at.desc(), ModelVersion.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _refresh_where(session: Session, condition: ColumnElement[bool]) -> None:
    session.execute(
        update(Image)
        .where(condition)
        .values(shown_model_version_id=shown_version_of_image())
        .execution_options(synchronize_session=False)
    )


def refresh_shown_versions(session: Session, image_ids: Sequence[int]) -> None:
    """Recompute the shown version of these images (after their scores changed)."""
    for chunk in chunks(list(image_ids)):
        _refresh_where(session, Image.id.in_(chunk))
    refresh_shown_tags(session, image_ids)


def refresh_after_promotion(
    session: Session, promoted: ModelVersion, stepped_down: ModelVersion | None
) -> None:
    """After ``promoted`` became champion: it shows wherever it scored; where a rolled-back
    ``stepped_down`` showed and ``promoted`` did not score, the next one in line shows."""
    scored_by_promoted = select(Score.image_id).where(Score.model_version_id == promoted.id)
    # Where the rolled-back version showed and the promoted one did not score, the next in
    # line shows (usually few images: a rollback promotes a version that scored most of them).
    left_by_stepped_down: list[int] = []
    if stepped_down is not None and stepped_down.rolled_back_at is not None:
        left_by_stepped_down = list(
            session.scalars(
                select(Image.id).where(
                    Image.shown_model_version_id == stepped_down.id,
                    ~exists().where(
                        Score.image_id == Image.id, Score.model_version_id == promoted.id
                    ),
                )
            )
        )
    session.execute(
        update(Image)
        .where(Image.id.in_(scored_by_promoted))
        .values(shown_model_version_id=promoted.id)
        .execution_options(synchronize_session=False)
    )
    if stepped_down is not None and left_by_stepped_down:
        _refresh_where(session, Image.shown_model_version_id == stepped_down.id)
    refresh_shown_tags_where(session, Image.id.in_(scored_by_promoted))
    refresh_shown_tags(session, left_by_stepped_down)


def refresh_all_shown_versions(session: Session) -> None:
    """Recompute every image's shown version and tags (a repair, and the benchmark's fill)."""
    _refresh_where(session, Image.id.is_not(None))
    refresh_all_shown_tags(session)
