"""The claims that keep two scoring runs off one image.

Concurrent runs share the work through claims. A run claims each batch in the transaction that
picks it from its pending images (:mod:`mlc_core.db.pending`; PostgreSQL: ``FOR UPDATE SKIP
LOCKED`` on the picked image rows, so two runs picking at the same moment take different rows;
SQLite: writers are serialised by ``BEGIN IMMEDIATE``) and releases the claims in the
transaction that writes the batch's results, after which the images are no longer pending for
anyone. A claim counts while its run is ``running`` and its heartbeat is younger than the
lease; a dead run's claims are taken over (see :mod:`mlc_core.db.runs` for run liveness).

Functions take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, delete, exists, func, select, update
from sqlalchemy.orm import Session

from mlc_core.db._statements import (
    CHUNK_SIZE,
    chunks,
    insert_ignoring_conflicts,
)
from mlc_core.db.engine import database_now
from mlc_core.db.images import ClaimedImage, record_failures
from mlc_core.db.models import Image, Run, ScoreClaim
from mlc_core.db.pending import ScoringScope, pending_condition
from mlc_core.db.runs import end_runs


@dataclass(frozen=True)
class ClaimedBatch:
    """The result of one :func:`claim_images` call.

    Attributes:
        images: the images this run now holds, in id order.
        last_id: the highest image id looked at (the next keyset cursor), ``None`` when there
            was nothing left to look at.
        dead_runs_ended: runs this call ended because it took over their dead claims.
        given_up: images recorded as failed instead of claimed: their claims had been taken
            over from dead runs ``max_abandoned_claims`` times.
    """

    images: list[ClaimedImage]
    last_id: int | None
    dead_runs_ended: list[int] = field(default_factory=list)
    given_up: list[int] = field(default_factory=list)


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


def claim_images(
    session: Session,
    scope: ScoringScope,
    *,
    run_id: int,
    after_id: int,
    limit: int,
    live_after: datetime,
    only_ids: Sequence[int] | None = None,
    max_abandoned_claims: int | None = None,
) -> ClaimedBatch:
    """Pick the next pending images with ids above ``after_id`` and claim them for ``run_id``.

    Images held by a live claim are passed over; claims of dead runs (not running, or silent
    since before ``live_after``) are replaced, and those runs are ended first: a run that was
    only slow then finds itself ended at its next heartbeat or write and stops, instead of
    scoring the same images as this one. An image whose claim was taken over before (it was
    in flight when a run died) is claimed alone, so an image that kills its scorer takes no
    other image with it; one taken over ``max_abandoned_claims`` times is recorded as failed.
    The claims commit with the caller's transaction.

    Args:
        session: a session in the caller's transaction.
        scope: the run's model version, mode, prefixes and start.
        run_id: the claiming run.
        after_id: the keyset cursor (0 to start).
        limit: at most this many images are looked at.
        live_after: claims of runs whose heartbeat is older than this are dead.
        only_ids: look at these images only (to retry ones another run was holding).
        max_abandoned_claims: give an image up after this many takeovers (None: never).

    Returns:
        The images now held by ``run_id`` and the cursor for the next call.
    """
    candidates, last_id = _pick_candidates(session, scope, after_id, limit, live_after, only_ids)
    if not candidates:
        return ClaimedBatch(images=[], last_id=last_id)
    ids = [candidate.image.id for candidate in candidates]
    ended = _end_dead_holders(session, scope, ids, run_id, live_after)
    # Dropped after the ended runs' own: a claim left by a run that ended before.
    taken_over = {c.image.id for c in candidates if c.dead_claim} | _drop_dead_claims(
        session, scope, ids, live_after
    )
    abandoned = {c.image.id: c.abandoned + (c.image.id in taken_over) for c in candidates}
    given_up = _give_up(session, taken_over, abandoned, max_abandoned_claims)
    held = _insert_claims(session, scope, [i for i in ids if i not in given_up], run_id)
    return ClaimedBatch(
        images=[c.image for c in candidates if c.image.id in held],
        last_id=ids[-1],
        dead_runs_ended=ended,
        given_up=sorted(given_up),
    )


@dataclass(frozen=True)
class _Candidate:
    image: ClaimedImage
    abandoned: int
    dead_claim: bool

    @property
    def suspect(self) -> bool:
        """In flight when a run died, once or now: it may be what killed the run."""
        return self.abandoned > 0 or self.dead_claim


def _pick_candidates(
    session: Session,
    scope: ScoringScope,
    after_id: int,
    limit: int,
    live_after: datetime,
    only_ids: Sequence[int] | None,
) -> tuple[list[_Candidate], int | None]:
    """The next pending unheld images and the cursor after them.

    A suspect image comes alone; the batch before it stops short of it.
    """
    # A claim left on a candidate (live ones are passed over) is a dead run's: the image was
    # in flight when that run died, and may be what killed it.
    dead_claim = (
        exists()
        .where(
            ScoreClaim.image_id == Image.id,
            ScoreClaim.model_version_id == scope.model_version_id,
        )
        .label("dead_claim")
    )
    statement = (
        select(Image.id, Image.uri, Image.etag, Image.size, Image.abandoned_claims, dead_claim)
        .where(
            pending_condition(scope),
            Image.id > after_id,
            ~_live_claim(scope.model_version_id, live_after),
        )
        .order_by(Image.id)
        .limit(limit)
    )
    window: list[int] = []
    if only_ids is not None:
        # One bounded IN list per call: the cursor walks through a long list of ids.
        window = sorted(i for i in only_ids if i > after_id)[:CHUNK_SIZE]
        if not window:
            return [], None
        statement = statement.where(Image.id.in_(window))
    if session.get_bind().dialect.name == "postgresql":
        # Two runs picking at the same moment skip each other's rows instead of both picking
        # them and one then finding every claim taken.
        statement = statement.with_for_update(of=Image, skip_locked=True)
    rows = [
        _Candidate(ClaimedImage(image_id, uri, etag, size), int(abandoned or 0), bool(dead))
        for image_id, uri, etag, size, abandoned, dead in session.execute(statement)
    ]
    rows = _isolate_suspects(rows)
    if rows:
        return rows, rows[-1].image.id
    return [], (window[-1] if window else None)


def _isolate_suspects(rows: list[_Candidate]) -> list[_Candidate]:
    """A suspect image comes alone; a batch stops short of one."""
    if rows and rows[0].suspect:
        return rows[:1]
    return list(itertools.takewhile(lambda row: not row.suspect, rows))


def _end_dead_holders(
    session: Session, scope: ScoringScope, ids: list[int], run_id: int, live_after: datetime
) -> list[int]:
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
    return end_runs(session, dead_holders, live_after=live_after) if dead_holders else []


def _drop_dead_claims(
    session: Session, scope: ScoringScope, ids: list[int], live_after: datetime
) -> set[int]:
    """Remove the claims of dead runs on these images; returns the images they were on.

    PostgreSQL runs each statement here on a fresh snapshot, while the pick may have read an
    older one: another run can have claimed, scored and released some candidates since. So
    only claims that are dead now are removed, and a live claim makes the insert skip its
    image.
    """
    return set(
        session.scalars(
            delete(ScoreClaim)
            .where(
                ScoreClaim.model_version_id == scope.model_version_id,
                ScoreClaim.image_id.in_(ids),
                ~_claim_of_a_live_run(live_after),
            )
            .returning(ScoreClaim.image_id)
        )
    )


def _give_up(
    session: Session,
    taken_over: set[int],
    abandoned: dict[int, int],
    max_abandoned_claims: int | None,
) -> set[int]:
    """Count the takeovers; record as failed the images that reached the limit."""
    for image_id in taken_over:
        session.execute(
            update(Image)
            .where(Image.id == image_id)
            .values(abandoned_claims=abandoned[image_id])
            .execution_options(synchronize_session=False)
        )
    if max_abandoned_claims is None:
        return set()
    given_up = {i for i in taken_over if abandoned[i] >= max_abandoned_claims}
    record_failures(
        session,
        [
            (
                image_id,
                f"crashed the scorer {abandoned[image_id]} times: every run that read it died "
                "before writing it (out of memory?), so it is no longer claimed",
            )
            for image_id in sorted(given_up)
        ],
    )
    return given_up


def _insert_claims(session: Session, scope: ScoringScope, ids: list[int], run_id: int) -> set[int]:
    """Claim ``ids`` for ``run_id``; returns the ones it now holds that are still pending."""
    if not ids:
        return set()
    now = database_now(session)
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
    if not inserted:
        return set()
    still_pending = set(
        session.scalars(
            select(Image.id).where(Image.id.in_(list(inserted)), pending_condition(scope))
        )
    )
    finished_meanwhile = inserted - still_pending
    if finished_meanwhile:
        release_claims(
            session,
            run_id=run_id,
            model_version_id=scope.model_version_id,
            image_ids=sorted(finished_meanwhile),
        )
    return still_pending


def images_held_by_other_runs(session: Session, scope: ScoringScope, *, run_id: int) -> list[int]:
    """Pending images of the scope that other runs hold claims on (live or dead), in id order."""
    held_by_other = exists().where(
        ScoreClaim.image_id == Image.id,
        ScoreClaim.model_version_id == scope.model_version_id,
        ScoreClaim.run_id != run_id,
    )
    return list(
        session.scalars(
            select(Image.id).where(pending_condition(scope), held_by_other).order_by(Image.id)
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
