"""What a scoring run works on: its scope, and which images are pending under its mode.

A run reads its work from the database, not from the listing: discovery registers what the
listing shows, then the run pages through the images its scope says are pending, in id order
(keyset pagination), so memory stays flat however many images there are and the total is known
up front for progress and ETA. A shard of a sharded run is a scope bounded to a range of image
ids (:func:`pending_image_ranges` cuts them). Claims (:mod:`mlc_core.db.claims`) keep two runs
off one image.

``all`` and ``failed`` are relative to the run's start (``since``): a score or a failure written
after it counts as done, so the images a concurrent run has just finished are not redone, while
a run started later still redoes everything, as asked.

Functions take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from mlc_core.db._statements import starts_with_any
from mlc_core.db.images import current_image
from mlc_core.db.models import Image, Score

ScoreMode = Literal["new", "stale", "all", "failed"]
SCORE_MODES: tuple[ScoreMode, ...] = ("new", "stale", "all", "failed")


def check_score_mode(mode: str) -> ScoreMode:
    """Return ``mode`` as a scoring mode.

    Raises:
        ValueError: ``mode`` is not one of :data:`SCORE_MODES`.
    """
    if mode not in SCORE_MODES:
        raise ValueError(f"unknown scoring mode {mode!r}; expected one of {', '.join(SCORE_MODES)}")
    return cast(ScoreMode, mode)


@dataclass(frozen=True)
class ScoringScope:
    """What one scoring run works on.

    Attributes:
        model_version_id: the model version that scores.
        mode: which images count as pending (see :data:`SCORE_MODES`).
        uri_prefixes: image URIs must start with one of these.
        since: the run's start; in the ``all`` and ``failed`` modes a score or failure written
            at or after it counts as done.
        first_image_id: only images with ids at or above this (a shard's range); None: no
            lower bound.
        last_image_id: only images with ids at or below this; None: no upper bound.
    """

    model_version_id: int
    mode: ScoreMode
    uri_prefixes: tuple[str, ...]
    since: datetime
    first_image_id: int | None = None
    last_image_id: int | None = None


def _pending_by_mode(scope: ScoringScope) -> ColumnElement[bool]:
    model_version_id = scope.model_version_id
    scored_by_this = exists().where(
        Score.image_id == Image.id, Score.model_version_id == model_version_id
    )
    if scope.mode == "new":
        # A failed image fails again until its bytes change (a new etag is a new row), so only
        # the `failed` and `all` modes retry it.
        return and_(Image.status != "failed", ~scored_by_this)
    if scope.mode == "stale":
        scored_by_other = exists().where(
            Score.image_id == Image.id, Score.model_version_id != model_version_id
        )
        return and_(Image.status != "failed", ~scored_by_this, scored_by_other)
    if scope.mode == "all":
        scored_by_this_since = exists().where(
            Score.image_id == Image.id,
            Score.model_version_id == model_version_id,
            Score.scored_at >= scope.since,
        )
        failed_since = and_(
            Image.status == "failed", Image.failed_at.is_not(None), Image.failed_at >= scope.since
        )
        return and_(~scored_by_this_since, ~failed_since)
    return and_(
        Image.status == "failed", or_(Image.failed_at.is_(None), Image.failed_at < scope.since)
    )


def pending_condition(scope: ScoringScope) -> ColumnElement[bool]:
    """The images the scope's run still has to score: current, under its prefixes, in its
    id range, and pending under its mode."""
    conditions = [
        current_image(),
        starts_with_any(Image.uri, scope.uri_prefixes),
        _pending_by_mode(scope),
    ]
    if scope.first_image_id is not None:
        conditions.append(Image.id >= scope.first_image_id)
    if scope.last_image_id is not None:
        conditions.append(Image.id <= scope.last_image_id)
    return and_(*conditions)


def count_pending_images(session: Session, scope: ScoringScope) -> int:
    """How many current images under the scope's prefixes its mode would score."""
    condition = pending_condition(scope)
    return int(session.scalar(select(func.count()).select_from(Image).where(condition)) or 0)


def pending_image_ranges(
    session: Session, scope: ScoringScope, *, size: int
) -> Iterator[tuple[int, int, int]]:
    """Split the scope's pending images, in id order, into ranges of ``size`` images each.

    The ranges tile the ids from 1 (or the scope's first id) to the last pending one, so every
    image pending now lies in exactly one of them; an image registered later, with a higher
    id, lies in none. The database walks the pending ids once, a range at a time; no list of
    ids comes back.

    Args:
        session: a session in the caller's transaction.
        scope: the model version, mode, prefixes and start the ranges are pending for.
        size: pending images per range (the last one may have fewer).

    Yields:
        ``(first id, last id, pending images)`` per range, inclusive, in id order.
    """
    if size < 1:
        raise ValueError(f"a range needs at least one image, got size {size}")
    condition = pending_condition(scope)
    first = scope.first_image_id if scope.first_image_id is not None else 1
    while True:
        last = session.scalar(
            select(Image.id)
            .where(condition, Image.id >= first)
            .order_by(Image.id)
            .offset(size - 1)
            .limit(1)
        )
        if last is None:
            break
        yield first, last, size
        first = last + 1
    last, count = session.execute(
        select(func.max(Image.id), func.count()).where(condition, Image.id >= first)
    ).one()
    if count:
        yield first, int(last), int(count)
