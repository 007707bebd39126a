"""Run locks: jobs that must not overlap wait for each other, and a dead holder never blocks."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from mlc_core.db.locks import try_acquire_locks
from mlc_core.db.models import Run, RunLock
from mlc_core.db.runs import start_run
from mlc_core.errors import MlcError
from mlc_core.jobs.locks import (
    TRAINING_LOCK,
    LockTimeout,
    holding_locks,
    scoring_lock_name,
    scoring_lock_names,
)
from mlc_core.jobs.workspace import Workspace
from tests.jobs.scoring_support import query

LEASE_SECONDS = 2.0
SCORING = {"claim_lease_seconds": LEASE_SECONDS}


@pytest.fixture
def workspace(each_backend: Workspace) -> Workspace:
    return each_backend


def test_a_second_holder_of_the_same_lock_waits_and_gives_up_at_its_timeout(
    workspace: Workspace,
) -> None:
    said: list[str] = []
    with holding_locks(workspace, [TRAINING_LOCK], purpose="the first training"):
        started = time.monotonic()
        with (
            pytest.raises(LockTimeout, match="held by the first training"),
            holding_locks(
                workspace,
                [TRAINING_LOCK],
                purpose="the second training",
                timeout_seconds=1.5,
                on_wait=said.append,
            ),
        ):
            pass
        assert time.monotonic() - started >= 1.5
    assert len(said) == 1 and "the first training" in said[0]


def test_locks_of_different_prefixes_are_held_side_by_side(workspace: Workspace) -> None:
    first, second = scoring_lock_names(workspace, ["images/a/", "images/b/"])
    with (
        holding_locks(workspace, [first], purpose="one"),
        holding_locks(workspace, [second], purpose="two", timeout_seconds=1),
    ):
        assert len(query(workspace, "select name from run_locks")) == 2
    assert query(workspace, "select count(*) from run_locks") == [(0,)]


def test_a_waiting_job_starts_as_soon_as_the_holder_releases(workspace: Workspace) -> None:
    released = threading.Event()

    def hold_briefly() -> None:
        with holding_locks(workspace, [TRAINING_LOCK], purpose="a short training"):
            time.sleep(1.0)
        released.set()

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    time.sleep(0.3)
    with holding_locks(workspace, [TRAINING_LOCK], purpose="the next", timeout_seconds=30):
        assert released.is_set()
    holder.join()


def test_a_lock_whose_holder_stopped_beating_is_taken_over_after_the_lease(
    workspace: Workspace,
) -> None:
    with workspace.transaction() as session:
        run_id = start_run(session, "train", {}).id
        attempt = try_acquire_locks(
            session,
            [TRAINING_LOCK],
            holder="a-killed-process",
            description="a training killed with kill -9",
            lease=timedelta(seconds=LEASE_SECONDS),
            run_id=run_id,
        )
    assert attempt.blocking == []

    started = time.monotonic()
    with holding_locks(workspace, [TRAINING_LOCK], purpose="the next", timeout_seconds=30):
        waited = time.monotonic() - started

    assert LEASE_SECONDS - 0.5 <= waited < LEASE_SECONDS + 3
    [(status, error)] = query(workspace, "select status, error from runs where id = :id", id=run_id)
    assert status == "failed" and "stopped without finishing" in error


def test_a_holder_that_keeps_beating_keeps_its_lock_past_the_lease(workspace: Workspace) -> None:
    with holding_locks(workspace, [TRAINING_LOCK], purpose="a long training") as held:
        time.sleep(LEASE_SECONDS * 2)
        with (
            pytest.raises(LockTimeout),
            holding_locks(workspace, [TRAINING_LOCK], purpose="x", timeout_seconds=0.5),
        ):
            pass
        assert not held.lost


def test_all_locks_are_taken_together_or_none(workspace: Workspace) -> None:
    a, b = scoring_lock_names(workspace, ["images/a/", "images/b/"])
    with holding_locks(workspace, [b], purpose="the b run"):
        with (
            pytest.raises(LockTimeout),
            holding_locks(workspace, [a, b], purpose="a and b", timeout_seconds=0.5),
        ):
            pass
        # The half the waiting job could have taken is not kept.
        assert query(workspace, "select name from run_locks") == [(b,)]


def test_a_holder_that_lost_its_lock_is_told_when_its_block_ends(workspace: Workspace) -> None:
    with (
        pytest.raises(MlcError, match="lost its locks"),
        holding_locks(workspace, [TRAINING_LOCK], purpose="a stalled training"),
    ):
        # As if this process stalled past the lease and another job took the lock over.
        with workspace.transaction() as session:
            session.execute(update(RunLock).values(holder="someone-else"))
        time.sleep(LEASE_SECONDS)
    with workspace.transaction() as session:
        assert session.get(RunLock, TRAINING_LOCK) is not None
        assert session.query(Run).count() == 0


def test_lock_names_are_distinct_per_store_and_prefix_and_bounded() -> None:
    names = {
        scoring_lock_name(root, prefix)
        for root in ("file:///a/", "s3://bucket/p/")
        for prefix in ("images/", "images", "", "a b/ü/")
    }
    long_names = {scoring_lock_name("s3://b/", "x" * 300 + str(i)) for i in range(3)}

    assert len(names) == 8
    assert len(long_names) == 3 and all(len(name) <= 255 for name in long_names)
