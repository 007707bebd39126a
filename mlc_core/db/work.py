"""Queries that pick the images a scoring run has to work on.

Scoring reads its work from the database, not from the listing: discovery registers what the
listing shows, then scoring pages through the images that need a score in id order (keyset
pagination), so memory stays flat however many images there are and the total is known up front
for progress and ETA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from sqlalchemy import ColumnElement, and_, delete, exists, false, func, or_, select
from sqlalchemy.orm import Session

from mlc_core.db.models import Image, ImageTag, Score

ScoreMode = Literal["new", "stale", "all", "failed"]
SCORE_MODES: tuple[ScoreMode, ...] = ("new", "stale", "all", "failed")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _pending_condition(
    model_version_id: int, mode: ScoreMode, uri_prefixes: Sequence[str]
) -> ColumnElement[bool]:
    scored_by_this = exists().where(
        Score.image_id == Image.id, Score.model_version_id == model_version_id
    )
    scored_by_other = exists().where(
        Score.image_id == Image.id, Score.model_version_id != model_version_id
    )
    in_prefixes = (
        or_(*(Image.uri.like(_escape_like(p) + "%", escape="\\") for p in uri_prefixes))
        if uri_prefixes
        else false()
    )
    by_mode: dict[str, ColumnElement[bool]] = {
        # A failed image fails again until its bytes change (a new etag is a new row), so only
        # the `failed` mode retries it.
        "new": and_(Image.status != "failed", ~scored_by_this),
        "stale": and_(Image.status != "failed", ~scored_by_this, scored_by_other),
        "all": Image.id.is_not(None),
        "failed": Image.status == "failed",
    }
    return and_(Image.superseded_at.is_(None), in_prefixes, by_mode[mode])


def count_pending_images(
    session: Session, *, model_version_id: int, mode: ScoreMode, uri_prefixes: Sequence[str]
) -> int:
    """How many current images under ``uri_prefixes`` the given mode would score."""
    condition = _pending_condition(model_version_id, mode, uri_prefixes)
    return int(session.scalar(select(func.count()).select_from(Image).where(condition)) or 0)


def pending_images(
    session: Session,
    *,
    model_version_id: int,
    mode: ScoreMode,
    uri_prefixes: Sequence[str],
    after_id: int,
    limit: int,
) -> list[tuple[int, str]]:
    """The next ``limit`` (image id, uri) pairs to score with ids above ``after_id``."""
    condition = _pending_condition(model_version_id, mode, uri_prefixes)
    rows = session.execute(
        select(Image.id, Image.uri)
        .where(condition, Image.id > after_id)
        .order_by(Image.id)
        .limit(limit)
    )
    return [(image_id, uri) for image_id, uri in rows]


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


def known_image_versions(
    session: Session, versions: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of these (uri, etag) pairs are registered already."""
    if not versions:
        return set()
    uris = sorted({uri for uri, _ in versions})
    rows = session.execute(select(Image.uri, Image.etag).where(Image.uri.in_(uris)))
    wanted = set(versions)
    return {(uri, etag) for uri, etag in rows if (uri, etag) in wanted}
