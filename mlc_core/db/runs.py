"""Job runs: one row per train, score, retag or labels import, with its status, counts, error,
and, while it works, its heartbeat.

A running scoring run refreshes ``heartbeat_at``; one silent for longer than the lease is
dead (``kill -9``, a lost machine), and whoever finds it ends it, which drops the images it
had claimed. Heartbeats and the lease use the database's clock, which every machine shares,
and the silence is checked in the statement that ends a run, so a run that beat a moment ago
is never ended.

Functions take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from mlc_core.db._statements import in_session
from mlc_core.db.engine import database_now
from mlc_core.db.models import RUN_KINDS, RUN_STATUSES, Run, ScoreClaim


def start_run(session: Session, kind: str, parameters: dict[str, Any]) -> Run:
    """Record the start of a job and return its run (with its id).

    Raises:
        ValueError: ``kind`` is not one of ``RUN_KINDS``.
    """
    if kind not in RUN_KINDS:
        raise ValueError(f"unknown run kind {kind!r}; expected one of {', '.join(RUN_KINDS)}")
    run = Run(
        kind=kind,
        status="running",
        started_at=database_now(session),
        parameters=parameters,
        counts={},
    )
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
    run = in_session(session, run)
    run.status = status
    run.finished_at = database_now(session)
    run.counts = counts
    run.error = error
    if model_version_id is not None:
        run.model_version_id = model_version_id
    session.flush()


def record_heartbeat(session: Session, run_id: int) -> bool:
    """Tell other runs that ``run_id`` is alive.

    Returns:
        False when the run is no longer ``running`` (another run found it silent for longer
        than the lease and ended it): it must stop, as its claims may have been taken over.
    """
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "running")
        .values(heartbeat_at=database_now(session))
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def live_after(session: Session, lease: timedelta) -> datetime:
    """The oldest heartbeat of a live run: the database's now minus the lease."""
    return database_now(session) - lease


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
    """Mark these runs failed and drop their claims, those still running and silent since
    before ``live_after``.

    Returns:
        The ids of the runs this call ended (a run already ended is left as it was).
    """
    if not run_ids:
        return []
    ended = list(
        session.scalars(
            update(Run)
            .where(
                Run.id.in_(list(run_ids)),
                Run.status == "running",
                func.coalesce(Run.heartbeat_at, Run.started_at) < live_after,
            )
            .values(
                status="failed",
                finished_at=database_now(session),
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
    # Claims of runs that are not running (ended now or before) hold nothing any more; a run
    # that beat a moment ago keeps its claims.
    not_running = select(Run.id).where(Run.id.in_(list(run_ids)), Run.status != "running")
    session.execute(delete(ScoreClaim).where(ScoreClaim.run_id.in_(not_running)))
    return sorted(ended)


def last_training_started_at(session: Session) -> datetime | None:
    """When the most recent successful training run started, or ``None`` if none succeeded.

    A training run reads the labels as they are when it starts, so labels changed after this
    moment are the ones no model version has seen.
    """
    return session.scalar(
        select(func.max(Run.started_at)).where(Run.kind == "train", Run.status == "succeeded")
    )


def recent_runs(session: Session, *, kind: str | None = None, limit: int = 20) -> list[Run]:
    """The latest runs, newest first (of one kind, or of all)."""
    statement = select(Run).order_by(Run.started_at.desc(), Run.id.desc()).limit(limit)
    if kind is not None:
        statement = statement.where(Run.kind == kind)
    return list(session.scalars(statement))
