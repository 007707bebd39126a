"""Job runs: one row per train, score or retag run, with its status, counts and error.

Functions take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from mlc_core.db.models import RUN_KINDS, RUN_STATUSES, Run, utc_now
from mlc_core.db.statements import in_session


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
    run = in_session(session, run)
    run.status = status
    run.finished_at = utc_now()
    run.counts = counts
    run.error = error
    if model_version_id is not None:
        run.model_version_id = model_version_id
    session.flush()
