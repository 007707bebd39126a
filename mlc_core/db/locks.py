"""Run locks: named locks that jobs which must not overlap hold while they work.

A lock is a row of ``run_locks`` with a heartbeat. It is held while its heartbeat is younger
than the lease; a lock whose holder stopped beating (``kill -9``, a lost machine, a hung
process) is taken over by the next job that asks, in the statement that removes it, so a crash
never blocks the runs after it for longer than the lease. Heartbeats and lease checks use the
database's clock, which every client shares.

Functions take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from mlc_core.db._statements import insert_ignoring_conflicts
from mlc_core.db.engine import database_now
from mlc_core.db.models import Run, RunLock


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a lock."""

    name: str
    description: str
    acquired_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True)
class LockAttempt:
    """The outcome of :func:`try_acquire_locks`.

    Attributes:
        blocking: live holders of other jobs that keep this one waiting; empty when every
            lock is now held.
        taken_over: dead holders whose locks this attempt removed.
    """

    blocking: list[LockHolder]
    taken_over: list[LockHolder]


def try_acquire_locks(
    session: Session,
    names: Sequence[str],
    *,
    holder: str,
    description: str,
    lease: timedelta,
    run_id: int | None = None,
) -> LockAttempt:
    """Take every named lock for ``holder``, or none of them.

    Locks whose heartbeat is older than ``lease`` are dead: they are removed (and the runs
    they guarded, if still marked running, end as failed) before the live ones are looked at.

    Args:
        session: a session in the caller's transaction.
        names: the locks to take together.
        holder: a random id of this holding.
        description: who holds it, for the messages of jobs that wait ("mlc score on host
            (pid 12)").
        lease: how long a lock outlives its last heartbeat.
        run_id: the run the locks guard, if there is one yet.

    Returns:
        The live holders of other jobs that keep this one waiting (none when every lock is now
        held by ``holder``), and the dead holders whose locks were taken over.
    """
    wanted = sorted(set(names))
    now = database_now(session)
    taken_over = _remove_dead_locks(session, wanted, now - lease)
    blocking = _other_holders(session, wanted, holder)
    if blocking:
        return LockAttempt(blocking, taken_over)
    inserted = set(
        session.scalars(
            insert_ignoring_conflicts(session, RunLock, ["name"]).returning(RunLock.name),
            [
                {
                    "name": name,
                    "holder": holder,
                    "description": description,
                    "run_id": run_id,
                    "acquired_at": now,
                    "heartbeat_at": now,
                }
                for name in wanted
            ],
        ).all()
    )
    if len(inserted) < len(wanted):
        # Another job took some of them between the look and the insert: give back what this
        # call took, so two jobs asking for overlapping sets cannot hold half each.
        session.execute(
            delete(RunLock).where(RunLock.name.in_(sorted(inserted)), RunLock.holder == holder)
        )
    return LockAttempt(_other_holders(session, wanted, holder), taken_over)


def _remove_dead_locks(
    session: Session, names: list[str], stale_before: datetime
) -> list[LockHolder]:
    """Remove the locks silent since before ``stale_before`` and end the runs they guarded."""
    # The staleness is checked in the statement that removes the lock, so a holder that beat
    # a moment ago keeps it.
    removed = list(
        session.scalars(
            delete(RunLock)
            .where(RunLock.name.in_(names), RunLock.heartbeat_at < stale_before)
            .returning(RunLock)
        )
    )
    dead_runs = [lock.run_id for lock in removed if lock.run_id is not None]
    if dead_runs:
        _end_abandoned_runs(session, dead_runs, stale_before)
    return [_holder_of(lock) for lock in removed]


def _other_holders(session: Session, names: list[str], holder: str) -> list[LockHolder]:
    return [
        _holder_of(lock)
        for lock in session.scalars(
            select(RunLock).where(RunLock.name.in_(names), RunLock.holder != holder)
        )
    ]


def attach_run(session: Session, *, holder: str, run_id: int) -> None:
    """Record which run ``holder``'s locks guard (ended as failed if the holder dies)."""
    session.execute(
        update(RunLock)
        .where(RunLock.holder == holder)
        .values(run_id=run_id)
        .execution_options(synchronize_session=False)
    )


def beat_locks(session: Session, *, holder: str, names: Sequence[str]) -> bool:
    """Refresh the heartbeat of ``holder``'s locks.

    Returns:
        False when one of them is no longer ``holder``'s: it stayed silent for longer than the
        lease and another job took the lock over.
    """
    wanted = sorted(set(names))
    result = session.execute(
        update(RunLock)
        .where(RunLock.holder == holder, RunLock.name.in_(wanted))
        .values(heartbeat_at=database_now(session))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0)) == len(wanted)


def release_locks(session: Session, *, holder: str) -> None:
    """Give back every lock ``holder`` holds."""
    session.execute(delete(RunLock).where(RunLock.holder == holder))


def _holder_of(lock: RunLock) -> LockHolder:
    return LockHolder(
        name=lock.name,
        description=lock.description,
        acquired_at=lock.acquired_at,
        heartbeat_at=lock.heartbeat_at,
    )


def _end_abandoned_runs(session: Session, run_ids: Sequence[int], stale_before: datetime) -> None:
    session.execute(
        update(Run)
        .where(Run.id.in_(list(run_ids)), Run.status == "running")
        .values(
            status="failed",
            finished_at=database_now(session),
            error=(
                "the run stopped without finishing (its lock had no heartbeat since before "
                f"{stale_before.isoformat(timespec='seconds')}); a later run took the lock over"
            ),
        )
        .execution_options(synchronize_session=False)
    )
