"""Queries of the scoring and re-tagging jobs: which images to score, who holds them, tag sets.

Scoring reads its work from the database, not from the listing: discovery registers what the
listing shows, then scoring pages through the images that need a score in id order (keyset
pagination), so memory stays flat however many images there are and the total is known up front
for progress and ETA.

Concurrent runs share the work through claims. A run claims each batch in the transaction that
picks it (PostgreSQL: ``FOR UPDATE SKIP LOCKED`` on the picked image rows, so two runs picking
at the same moment take different rows; SQLite: writers are serialised by ``BEGIN IMMEDIATE``)
and releases the claims in the transaction that writes the batch's results, after which the
images are no longer pending for anyone. A claim counts while its run is ``running`` and its
heartbeat is younger than the lease; a dead run's claims are taken over. A shard of a sharded
run is a scope bounded to a range of image ids (:func:`pending_image_ranges` cuts them), scored
by a run of its own with the same claims.

``all`` and ``failed`` are relative to the run's start (``since``): a score or a failure written
after it counts as done, so the images a concurrent run has just finished are not redone, while
a run started later still redoes everything, as asked.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    exists,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from mlc_core.db.models import Image, Run, Score, ScoreClaim, utc_now
from mlc_core.db.statements import chunks, insert_ignoring_conflicts

ScoreMode = Literal["new", "stale", "all", "failed"]
SCORE_MODES: tuple[ScoreMode, ...] = ("new", "stale", "all", "failed")


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


@dataclass(frozen=True)
class ClaimedBatch:
    """The result of one :func:`claim_images` call.

    Attributes:
        images: ``(image id, uri)`` pairs this run now holds, in id order.
        last_id: the highest image id looked at (the next keyset cursor), ``None`` when there
            was nothing left to look at.
        dead_runs_ended: runs this call ended because it took over their dead claims.
    """

    images: list[tuple[int, str]]
    last_id: int | None
    dead_runs_ended: list[int] = field(default_factory=list)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _in_prefixes(uri_prefixes: Sequence[str]) -> ColumnElement[bool]:
    if not uri_prefixes:
        return false()
    return or_(*(Image.uri.like(_escape_like(p) + "%", escape="\\") for p in uri_prefixes))


def _pending_condition(scope: ScoringScope) -> ColumnElement[bool]:
    model_version_id = scope.model_version_id
    scored_by_this = exists().where(
        Score.image_id == Image.id, Score.model_version_id == model_version_id
    )
    scored_by_other = exists().where(
        Score.image_id == Image.id, Score.model_version_id != model_version_id
    )
    scored_by_this_since = exists().where(
        Score.image_id == Image.id,
        Score.model_version_id == model_version_id,
        Score.scored_at >= scope.since,
    )
    failed_since = and_(
        Image.status == "failed", Image.failed_at.is_not(None), Image.failed_at >= scope.since
    )
    by_mode: dict[str, ColumnElement[bool]] = {
        # A failed image fails again until its bytes change (a new etag is a new row), so only
        # the `failed` and `all` modes retry it.
        "new": and_(Image.status != "failed", ~scored_by_this),
        "stale": and_(Image.status != "failed", ~scored_by_this, scored_by_other),
        "all": and_(~scored_by_this_since, ~failed_since),
        "failed": and_(
            Image.status == "failed", or_(Image.failed_at.is_(None), Image.failed_at < scope.since)
        ),
    }
    conditions = [
        Image.superseded_at.is_(None),
        _in_prefixes(scope.uri_prefixes),
        by_mode[scope.mode],
    ]
    if scope.first_image_id is not None:
        conditions.append(Image.id >= scope.first_image_id)
    if scope.last_image_id is not None:
        conditions.append(Image.id <= scope.last_image_id)
    return and_(*conditions)


def _claim_of_a_live_run(live_after: datetime) -> ColumnElement[bool]:
    """The claim's run is running and its heartbeat is younger than the lease."""
    return exists().where(
        Run.id == ScoreClaim.run_id,
        Run.status == "running",
        func.coalesce(Run.heartbeat_at, Run.started_at) >= live_after,
    )


def _live_claim(model_version_id: int, live_after: datetime) -> ColumnElement[bool]:
    """An image is held while a claim on it belongs to a running run with a fresh heartbeat."""
    return exists().where(
        ScoreClaim.image_id == Image.id,
        ScoreClaim.model_version_id == model_version_id,
        _claim_of_a_live_run(live_after),
    )


def count_pending_images(session: Session, scope: ScoringScope) -> int:
    """How many current images under the scope's prefixes its mode would score."""
    condition = _pending_condition(scope)
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
    condition = _pending_condition(scope)
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


def claim_images(
    session: Session,
    scope: ScoringScope,
    *,
    run_id: int,
    after_id: int,
    limit: int,
    live_after: datetime,
    only_ids: Sequence[int] | None = None,
) -> ClaimedBatch:
    """Pick the next pending images with ids above ``after_id`` and claim them for ``run_id``.

    Images held by a live claim are passed over; claims of dead runs (not running, or silent
    since before ``live_after``) are replaced. The claims commit with the caller's transaction.

    Args:
        session: a session in the caller's transaction.
        scope: the run's model version, mode, prefixes and start.
        run_id: the claiming run.
        after_id: the keyset cursor (0 to start).
        limit: at most this many images are looked at.
        live_after: claims of runs whose heartbeat is older than this are dead.
        only_ids: look at these images only (to retry ones another run was holding).

    Returns:
        The images now held by ``run_id`` and the cursor for the next call.
    """
    statement = (
        select(Image.id, Image.uri)
        .where(
            _pending_condition(scope),
            Image.id > after_id,
            ~_live_claim(scope.model_version_id, live_after),
        )
        .order_by(Image.id)
        .limit(limit)
    )
    if only_ids is not None:
        statement = statement.where(Image.id.in_(list(only_ids)))
    if session.get_bind().dialect.name == "postgresql":
        # Two runs picking at the same moment skip each other's rows instead of both picking
        # them and one then finding every claim taken.
        statement = statement.with_for_update(of=Image, skip_locked=True)
    candidates = [(image_id, uri) for image_id, uri in session.execute(statement)]
    if not candidates:
        return ClaimedBatch(images=[], last_id=None)
    ids = [image_id for image_id, _ in candidates]
    # A run whose claims are taken over is ended first: a run that was only slow then finds
    # itself ended at its next heartbeat or write and stops, instead of scoring the same
    # images as this one.
    dead_holders = list(
        session.scalars(
            select(ScoreClaim.run_id)
            .distinct()
            .where(
                ScoreClaim.model_version_id == scope.model_version_id,
                ScoreClaim.image_id.in_(ids),
                ScoreClaim.run_id != run_id,
                ~_claim_of_a_live_run(live_after),
            )
        )
    )
    ended = end_runs(session, dead_holders, live_after=live_after) if dead_holders else []
    # PostgreSQL runs each statement below on a fresh snapshot, while the pick above may have
    # read an older one: another run can have claimed, scored and released some candidates
    # since. So only claims that are dead now are replaced, a live claim makes the insert skip
    # its image, and the images still pending after the insert are the ones this run holds.
    session.execute(
        delete(ScoreClaim).where(
            ScoreClaim.model_version_id == scope.model_version_id,
            ScoreClaim.image_id.in_(ids),
            ~_claim_of_a_live_run(live_after),
        )
    )
    now = utc_now()
    inserted = set(
        session.scalars(
            insert_ignoring_conflicts(
                session, ScoreClaim, ["image_id", "model_version_id"]
            ).returning(ScoreClaim.image_id),
            [
                {
                    "image_id": image_id,
                    "model_version_id": scope.model_version_id,
                    "run_id": run_id,
                    "claimed_at": now,
                }
                for image_id in ids
            ],
        ).all()
    )
    still_pending = (
        set(
            session.scalars(
                select(Image.id).where(Image.id.in_(list(inserted)), _pending_condition(scope))
            )
        )
        if inserted
        else set()
    )
    finished_meanwhile = inserted - still_pending
    if finished_meanwhile:
        release_claims(
            session,
            run_id=run_id,
            model_version_id=scope.model_version_id,
            image_ids=sorted(finished_meanwhile),
        )
    return ClaimedBatch(
        images=[(image_id, uri) for image_id, uri in candidates if image_id in still_pending],
        last_id=ids[-1],
        dead_runs_ended=ended,
    )


def images_held_by_other_runs(session: Session, scope: ScoringScope, *, run_id: int) -> list[int]:
    """Pending images of the scope that other runs hold claims on (live or dead), in id order."""
    held_by_other = exists().where(
        ScoreClaim.image_id == Image.id,
        ScoreClaim.model_version_id == scope.model_version_id,
        ScoreClaim.run_id != run_id,
    )
    return list(
        session.scalars(
            select(Image.id).where(_pending_condition(scope), held_by_other).order_by(Image.id)
        )
    )


def release_claims(
    session: Session, *, run_id: int, model_version_id: int, image_ids: Sequence[int]
) -> None:
    """Drop ``run_id``'s claims on these images (their results are written in this transaction)."""
    for chunk in chunks(list(image_ids)):
        session.execute(
            delete(ScoreClaim).where(
                ScoreClaim.run_id == run_id,
                ScoreClaim.model_version_id == model_version_id,
                ScoreClaim.image_id.in_(chunk),
            )
        )


def release_run_claims(session: Session, run_id: int) -> None:
    """Drop every claim ``run_id`` still holds (the run is ending)."""
    session.execute(delete(ScoreClaim).where(ScoreClaim.run_id == run_id))


def record_heartbeat(session: Session, run_id: int) -> bool:
    """Tell other runs that ``run_id`` is alive.

    Returns:
        False when the run is no longer ``running`` (another run found it silent for longer
        than the lease and ended it): it must stop, as its claims may have been taken over.
    """
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "running")
        .values(heartbeat_at=utc_now())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def end_dead_runs(session: Session, *, live_after: datetime) -> list[int]:
    """Mark scoring runs silent since before ``live_after`` as failed and drop their claims.

    Such a run was killed (``kill -9``, a lost machine) or hung; its claims would otherwise
    hold its images until the end of time.

    Returns:
        The ids of the runs ended.
    """
    dead = list(
        session.scalars(
            select(Run.id).where(
                Run.kind == "score",
                Run.status == "running",
                func.coalesce(Run.heartbeat_at, Run.started_at) < live_after,
            )
        )
    )
    return end_runs(session, dead, live_after=live_after)


def end_runs(session: Session, run_ids: Sequence[int], *, live_after: datetime) -> list[int]:
    """Mark these runs failed, if still running, for silence since before ``live_after``, and
    drop their claims.

    Returns:
        The ids of the runs this call ended (a run already ended is left as it was).
    """
    if not run_ids:
        return []
    ended = list(
        session.scalars(
            update(Run)
            .where(Run.id.in_(list(run_ids)), Run.status == "running")
            .values(
                status="failed",
                finished_at=utc_now(),
                error=(
                    "the run stopped without finishing (no heartbeat since before "
                    f"{live_after.isoformat(timespec='seconds')}); a later run took over its "
                    "images"
                ),
            )
            .returning(Run.id)
            .execution_options(synchronize_session=False)
        )
    )
    session.execute(delete(ScoreClaim).where(ScoreClaim.run_id.in_(list(run_ids))))
    return sorted(ended)


def registered_image_versions(
    session: Session, versions: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], bool]:
    """Which of these (uri, etag) pairs are registered already, each with whether it is current.

    When every listed version is registered and current there is nothing to register: only
    one version of a URI is current at a time, so no other version needs marking superseded.
    """
    if not versions:
        return {}
    uris = sorted({uri for uri, _ in versions})
    wanted = set(versions)
    found: dict[tuple[str, str], bool] = {}
    for chunk in chunks(uris):
        rows = session.execute(
            select(Image.uri, Image.etag, Image.superseded_at).where(Image.uri.in_(chunk))
        )
        for uri, etag, superseded_at in rows:
            if (uri, etag) in wanted:
                found[(uri, etag)] = superseded_at is None
    return found


def has_current_images(session: Session, uri_prefix: str) -> bool:
    """Whether any current image version has a URI starting with ``uri_prefix``."""
    return bool(
        session.scalar(
            select(exists().where(Image.superseded_at.is_(None), _in_prefixes([uri_prefix])))
        )
    )
