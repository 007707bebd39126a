"""Keep jobs that must not overlap apart: one scoring run per prefix, one training at a time.

A job holds its locks (rows of ``run_locks``, see :mod:`mlc_core.db.locks`) for as long as it
works, and a background thread keeps their heartbeat fresh. A job that finds them taken waits
and says who holds them. A holder that dies stops beating, and the next job takes its locks
over once they are older than ``MLC_SCORING__CLAIM_LEASE_SECONDS``: the same lease after which
a dead run's claimed images are taken over, so no lock ever outlives its holder for longer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy.orm import Session

from mlc_core.db.locks import (
    LockHolder,
    attach_run,
    beat_locks,
    release_locks,
    try_acquire_locks,
)
from mlc_core.errors import MlcError
from mlc_core.jobs.workspace import Workspace

logger = logging.getLogger(__name__)

TRAINING_LOCK = "train"
_SCORING_LOCK_PREFIX = "score:"
_MAX_NAME = 255
# How often a waiting job looks again, at most.
_POLL_SECONDS = 1.0


class LockTimeout(MlcError):
    """The locks were still held by another job when the wait ran out."""


def scoring_lock_name(store_root_uri: str, prefix: str) -> str:
    """The lock a scoring run over ``prefix`` of the store at ``store_root_uri`` holds."""
    name = f"{_SCORING_LOCK_PREFIX}{store_root_uri}{prefix}"
    if len(name) <= _MAX_NAME:
        return name
    # Long URIs keep a readable start and a hash of the whole, so distinct prefixes differ.
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name[: _MAX_NAME - 17]}~{digest}"


def scoring_lock_names(workspace: Workspace, prefixes: Sequence[str]) -> list[str]:
    """The locks a scoring run over ``prefixes`` of the workspace's store holds."""
    return [scoring_lock_name(workspace.store.root_uri, prefix) for prefix in prefixes]


class HeldLocks:
    """Locks this process holds, with the thread that keeps their heartbeat fresh."""

    def __init__(self, workspace: Workspace, names: list[str], holder: str) -> None:
        self._workspace = workspace
        self.names = names
        self.holder = holder
        self.lost = False
        self._stop = threading.Event()
        lease = workspace.settings.scoring.claim_lease_seconds
        self._interval = lease / 4
        self._thread = threading.Thread(target=self._beat, name="mlc-lock-heartbeat", daemon=True)
        self._thread.start()

    def attach_run(self, session: Session, run_id: int) -> None:
        """Name the run these locks guard: it is ended as failed if this process dies.

        Call it in the transaction that starts the run, so a process killed in between leaves
        no run that nothing would ever end.
        """
        attach_run(session, holder=self.holder, run_id=run_id)

    def _beat(self) -> None:
        # Four beats per lease: the locks are only taken over after all of them were missed.
        while not self._stop.wait(self._interval):
            try:
                with self._workspace.transaction() as session:
                    alive = beat_locks(session, holder=self.holder, names=self.names)
            except Exception as error:
                logger.warning("could not refresh the locks %s: %s", self.names, error)
                continue
            if not alive:
                self.lost = True
                logger.error(
                    "lost the locks %s: they went without a heartbeat for longer than the "
                    "lease and another job took them over",
                    self.names,
                )
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _describe(holders: Sequence[LockHolder]) -> str:
    return "; ".join(
        f"{holder.name} is held by {holder.description} since "
        f"{holder.acquired_at.strftime('%Y-%m-%d %H:%M:%S')} UTC"
        for holder in holders
    )


@contextmanager
def holding_locks(
    workspace: Workspace,
    names: Sequence[str],
    *,
    purpose: str,
    timeout_seconds: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[HeldLocks]:
    """Hold every named lock while the block runs, waiting while another job holds one.

    All locks are taken together or not at all, so two jobs asking for overlapping sets
    cannot deadlock.

    Args:
        workspace: the database the locks live in.
        names: the locks, e.g. :func:`scoring_lock_name` of each prefix, or ``TRAINING_LOCK``.
        purpose: what holds them, for the messages of jobs that wait ("mlc score").
        timeout_seconds: give up waiting after this long; ``None`` waits as long as it takes.
        on_wait: called with a sentence each time the job starts waiting on other holders
            (default: a warning in the log).

    Raises:
        LockTimeout: the locks were not free within ``timeout_seconds``.
        MlcError: this process lost its locks while the block ran (it was silent for longer
            than the lease), and the block itself raised nothing.
    """
    wanted = sorted(set(names))
    holder = uuid.uuid4().hex
    # A job that waits says so where it is seen: it would otherwise look hung.
    _wait_and_acquire(
        workspace, wanted, holder, purpose, timeout_seconds, on_wait or logger.warning
    )
    held = HeldLocks(workspace, wanted, holder)
    failed = True
    try:
        yield held
        failed = False
    finally:
        held.stop()
        try:
            with workspace.transaction() as session:
                release_locks(session, holder=holder)
        except Exception as error:
            if not failed:
                raise
            # The block failed already (most likely the same outage); the locks expire with
            # the lease, and the block's error is the one worth showing.
            logger.warning("could not release the locks %s: %s", wanted, error)
    if held.lost:
        lease_seconds = workspace.settings.scoring.claim_lease_seconds
        raise MlcError(
            f"{purpose} lost its locks ({', '.join(wanted)}) after more than "
            f"{lease_seconds:g} s without a heartbeat, and another job may have taken them "
            "over; raise MLC_SCORING__CLAIM_LEASE_SECONDS if the database is that slow"
        )


def _wait_and_acquire(
    workspace: Workspace,
    names: list[str],
    holder: str,
    purpose: str,
    timeout_seconds: float | None,
    report: Callable[[str], None],
) -> None:
    """Take the locks, telling ``report`` whom it waits for each time that changes."""
    description = f"{purpose} on {socket.gethostname()} (pid {os.getpid()})"
    lease_seconds = workspace.settings.scoring.claim_lease_seconds
    started = time.monotonic()
    last_said = ""
    while True:
        with workspace.transaction() as session:
            attempt = try_acquire_locks(
                session,
                names,
                holder=holder,
                description=description,
                lease=timedelta(seconds=lease_seconds),
            )
        for dead in attempt.taken_over:
            logger.warning(
                "took over the lock %s of %s, silent since %s UTC (longer than the %g s lease)",
                dead.name,
                dead.description,
                dead.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S"),
                lease_seconds,
            )
        if not attempt.blocking:
            return
        said = _describe(attempt.blocking)
        if said != last_said:
            report(
                f"waiting: {said}; it is taken over if its holder stays silent for "
                f"{lease_seconds:g} s (MLC_SCORING__CLAIM_LEASE_SECONDS)"
            )
            last_said = said
        if timeout_seconds is not None and time.monotonic() - started >= timeout_seconds:
            raise LockTimeout(f"gave up after {timeout_seconds:g} s of waiting: {said}")
        time.sleep(min(_POLL_SECONDS, lease_seconds / 4))
