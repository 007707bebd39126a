"""One scoring run's row in ``runs``: start it, keep its heartbeat fresh, record how it ended.

Other runs tell that a run is alive by its heartbeat; one silent for longer than the lease is
dead, and its claimed images are taken over (see :mod:`mlc_core.db.claims`). A run beats only
while it makes progress (a batch claimed or committed, or waiting on other runs' claims): a run
wedged in a hung read stops beating, so its claims are taken over, and ends itself with a
clear error instead of holding its images forever.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError

from mlc_core.db.claims import release_run_claims
from mlc_core.db.engine import database_failure
from mlc_core.db.models import Run
from mlc_core.db.pending import ScoringScope
from mlc_core.db.runs import finish_run, record_heartbeat, start_run
from mlc_core.errors import MlcError, describe_error
from mlc_core.jobs.scoring.reports import ScoreReport
from mlc_core.jobs.workspace import Workspace

logger = logging.getLogger(__name__)

# How often a waiting thread looks again, at most.
_POLL_SECONDS = 1.0


class RunContext:
    """What the threads of one run share: the workspace, the run, the lease and a stop flag."""

    def __init__(self, workspace: Workspace, scope: ScoringScope, run_id: int) -> None:
        lease_seconds = workspace.settings.scoring.claim_lease_seconds
        self.workspace = workspace
        self.scope = scope
        self.run_id = run_id
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_seconds = min(_POLL_SECONDS, lease_seconds / 4)
        self.stopping = threading.Event()
        # Set when the run made no progress for a whole lease; the scoring thread raises it.
        self.stall: MlcError | None = None
        self._progress_at = time.monotonic()
        # Off until the model is loaded and traced: discovery and loading beat regardless.
        self._watching = False

    def made_progress(self) -> None:
        """Note that a stage moved on (a batch claimed, inferred or committed, a wait on
        other runs)."""
        self._progress_at = time.monotonic()

    def start_watching(self) -> None:
        """From now on, a run whose stages stop moving on for a lease has stalled."""
        self.made_progress()
        self._watching = True

    def stalled_for(self) -> float:
        """Seconds since a stage last moved on (0 before watching started)."""
        return time.monotonic() - self._progress_at if self._watching else 0.0

    def abandoned(self) -> MlcError:
        return MlcError(
            f"scoring run {self.run_id} was ended by another run after more than "
            f"{self.lease.total_seconds():g} s without a heartbeat, which may have taken over "
            "its images; stopping it (raise MLC_SCORING__CLAIM_LEASE_SECONDS if the database "
            "is that slow)"
        )


def start_scoring_run(
    workspace: Workspace, *, mode: str, prefixes: Sequence[str], batch_size: int, **extra: Any
) -> tuple[int, datetime]:
    """Record a scoring run as started, with where it works; returns its id and start."""
    parameters: dict[str, Any] = {
        "mode": mode,
        "prefixes": list(prefixes),
        "batch_size": batch_size,
        # Where the run works, for an operator tracing a shard or a dead run to a machine.
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **extra,
    }
    try:
        with workspace.transaction() as session:
            run = start_run(session, "score", parameters)
            run.heartbeat_at = run.started_at
            return run.id, run.started_at
    except DBAPIError as error:
        raise database_failure(workspace.engine, error) from error


def finish_scoring_run(
    context: RunContext,
    report: ScoreReport,
    error: BaseException | None,
) -> None:
    """Record the run's end and drop its claims; never hides the error that ended it."""
    try:
        with context.workspace.transaction() as session:
            release_run_claims(session, context.run_id)
            finish_run(
                session,
                session.get_one(Run, context.run_id),
                status="failed" if error else "succeeded",
                counts=report.as_dict(),
                error=None if error is None else describe_error(error),
                model_version_id=context.scope.model_version_id,
            )
    except Exception as finish_error:
        if error is None:
            if isinstance(finish_error, DBAPIError):
                raise database_failure(context.workspace.engine, finish_error) from finish_error
            raise
        # The run already failed (most likely the same database outage); its claims expire
        # with the lease, and the original error is the one worth showing.
        logger.warning("could not record the end of run %d: %s", context.run_id, finish_error)


class Heartbeat:
    """Refreshes the run's heartbeat from a background thread until stopped."""

    def __init__(self, context: RunContext) -> None:
        self._context = context
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._run, name="mlc-score-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Four beats per lease: a run is only declared dead after missing all of them.
        context = self._context
        interval = context.lease.total_seconds() / 4
        while not self._stop.wait(interval):
            if context.stalled_for() > context.lease.total_seconds():
                context.stall = MlcError(
                    f"scoring run {context.run_id} made no progress for more than "
                    f"{context.lease.total_seconds():g} s (a read or the model is stuck); it "
                    "stopped its heartbeat so other runs take its images over, and ended"
                )
                context.stopping.set()
                return
            try:
                with self._context.workspace.transaction() as session:
                    alive = record_heartbeat(session, self._context.run_id)
            except Exception as error:  # the writer and feeder report database failures
                logger.warning(
                    "could not record the heartbeat of run %d: %s", self._context.run_id, error
                )
                continue
            if not alive:
                self.lost = True
                self._context.stopping.set()
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
