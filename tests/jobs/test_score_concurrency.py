"""Two scoring runs over the same prefix at once never score an image twice, and the claims of
a dead run are taken over."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from mlc_core.db.claims import claim_images, release_claims
from mlc_core.db.models import Image, ScoreClaim, utc_now
from mlc_core.db.pending import ScoringScope
from mlc_core.db.runs import record_heartbeat, start_run
from mlc_core.db.scores import ImageScore, write_scores
from mlc_core.jobs.scoring import ScoreReport, score_images
from mlc_core.jobs.scoring.discovery import discover_images
from mlc_core.jobs.workspace import Workspace
from tests.jobs.scoring_support import (
    finished_report,
    put_tiny_images,
    query,
    register_champion,
    score_counts,
    start_scoring_process,
    wait_until_ready,
)

IMAGES = 160
# A lease far above any stall a loaded CI machine has, so only the dead-run tests (whose runs
# fell silent ten minutes ago) see a dead run.
SCORING = {"batch_size": 8, "read_workers": 4, "claim_lease_seconds": 60.0}
LEASE = timedelta(seconds=60)


@pytest.fixture
def workspace(each_backend: Workspace) -> Workspace:
    return each_backend


def test_two_concurrent_runs_on_postgresql_never_score_an_image_twice(
    server_workspace: Workspace,
) -> None:
    workspace = server_workspace
    champion = register_champion(workspace)
    keys = put_tiny_images(workspace, IMAGES)
    other = start_scoring_process(workspace.settings, pause=0.3)
    wait_until_ready(other)
    # Once the other run is scoring (a batch is in), this process starts the second run; the
    # other one, pausing after each batch, is then still at work for several seconds.
    deadline = time.monotonic() + 120
    while query(workspace, "select count(*) from scores") == [(0,)]:
        assert other.poll() is None and time.monotonic() < deadline, "the other run never scored"
        time.sleep(0.01)

    here = score_images(workspace, on_progress=lambda progress: time.sleep(0.02))
    there = finished_report(other)

    # Each run counts the images it ran through the model: together, each image once.
    assert here.scored + there["scored"] == IMAGES
    assert here.scored > 0 and there["scored"] > 0, "the runs did not overlap"
    assert score_counts(workspace, champion.id) == {workspace.store.uri(k): 1 for k in keys}
    assert query(workspace, "select status from runs where kind = 'score'") == [
        ("succeeded",),
        ("succeeded",),
    ]
    assert query(workspace, "select count(*) from score_claims") == [(0,)]


def _register(workspace: Workspace) -> None:
    discover_images(workspace, ["images/"], ScoreReport("v1", "new", ["images/"]))


def _claim_for_a_new_run(
    workspace: Workspace, model_version_id: int, heartbeat_age: timedelta, count: int
) -> tuple[int, list[int]]:
    """Start a run that claims the first ``count`` images, as a scoring run in another process
    would, with its last heartbeat ``heartbeat_age`` ago."""
    with workspace.transaction() as session:
        run = start_run(session, "score", {})
        run.heartbeat_at = utc_now() - heartbeat_age
        session.flush()
        image_ids = list(session.scalars(select(Image.id).order_by(Image.id).limit(count)))
        session.add_all(
            ScoreClaim(image_id=image_id, model_version_id=model_version_id, run_id=run.id)
            for image_id in image_ids
        )
        return run.id, image_ids


def test_images_claimed_by_a_dead_run_are_taken_over_and_the_run_marked_failed(
    workspace: Workspace,
) -> None:
    champion = register_champion(workspace)
    keys = put_tiny_images(workspace, 6)
    _register(workspace)
    dead_id, _ = _claim_for_a_new_run(workspace, champion.id, timedelta(minutes=10), 6)

    report = score_images(workspace)

    assert report.scored == 6 and report.dead_runs_ended == [dead_id]
    [(status, error)] = query(
        workspace, "select status, error from runs where id = :id", id=dead_id
    )
    assert status == "failed" and "stopped without finishing" in error
    assert score_counts(workspace, champion.id) == {workspace.store.uri(k): 1 for k in keys}
    # Were the run only slow, not dead, its next heartbeat tells it to stop.
    with workspace.transaction() as session:
        assert record_heartbeat(session, dead_id) is False


def test_images_claimed_by_a_live_run_are_left_to_it_until_it_scores_them(
    workspace: Workspace,
) -> None:
    champion = register_champion(workspace)
    put_tiny_images(workspace, 6)
    _register(workspace)
    live_id, held = _claim_for_a_new_run(workspace, champion.id, timedelta(0), 2)

    def other_run() -> None:
        for _ in range(4):
            time.sleep(0.5)
            with workspace.transaction() as session:
                record_heartbeat(session, live_id)
        with workspace.transaction() as session:
            write_scores(
                session,
                champion.id,
                live_id,
                [ImageScore(image_id, [0.1] * 5, []) for image_id in held],
            )
            release_claims(session, run_id=live_id, model_version_id=champion.id, image_ids=held)

    thread = threading.Thread(target=other_run)
    thread.start()
    try:
        report = score_images(workspace)
    finally:
        thread.join()

    assert (report.scored, report.held_by_other_runs, report.dead_runs_ended) == (4, 2, [])
    rows = query(workspace, "select image_id, run_id from scores order by image_id")
    assert [run_id for image_id, run_id in rows if image_id in held] == [live_id, live_id]
    assert len(rows) == 6


def test_two_runs_claiming_at_the_same_moment_on_postgresql_take_different_images(
    server_workspace: Workspace,
) -> None:
    workspace = server_workspace
    champion = register_champion(workspace)
    put_tiny_images(workspace, 8)
    _register(workspace)
    with workspace.transaction() as session:
        first, second = (start_run(session, "score", {}) for _ in range(2))
        for run in (first, second):
            run.heartbeat_at = utc_now()
        session.flush()
        scope = ScoringScope(champion.id, "new", (workspace.store.root_uri,), run.started_at)
        run_ids = (first.id, second.id)

    def claim(session: Session, run_id: int) -> list[int]:
        batch = claim_images(
            session, scope, run_id=run_id, after_id=0, limit=4, live_after=utc_now() - LEASE
        )
        return [image.id for image in batch.images]

    # The first claim's transaction is still open (its rows locked) when the second claims.
    with workspace.transaction() as one, workspace.transaction() as two:
        # Without SKIP LOCKED the second claim would wait for the first: fail, do not hang.
        two.execute(text("SET LOCAL lock_timeout = '5s'"))
        taken_first = claim(one, run_ids[0])
        taken_second = claim(two, run_ids[1])

    assert len(taken_first) == 4 and len(taken_second) == 4
    assert not set(taken_first) & set(taken_second)


def test_many_runs_claiming_and_finishing_batches_at_once_never_hold_an_image_together(
    server_workspace: Workspace,
) -> None:
    """Runs race through the claim, write and release cycle with batches of two: a run whose
    pick read a snapshot from before another run claimed (or finished) an image must not take
    that image over."""
    workspace = server_workspace
    champion = register_champion(workspace)
    count = 120
    put_tiny_images(workspace, count)
    _register(workspace)
    with workspace.transaction() as session:
        runs = [start_run(session, "score", {}) for _ in range(4)]
        for run in runs:
            run.heartbeat_at = utc_now()
        session.flush()
        scope = ScoringScope(champion.id, "new", (workspace.store.root_uri,), runs[0].started_at)
        run_ids = [run.id for run in runs]
    claimed: dict[int, list[int]] = {run_id: [] for run_id in run_ids}
    errors: list[BaseException] = []

    def run_through(run_id: int) -> None:
        try:
            cursor: int | None = 0
            while cursor is not None:
                with workspace.transaction() as session:
                    batch = claim_images(
                        session,
                        scope,
                        run_id=run_id,
                        after_id=cursor,
                        limit=2,
                        live_after=utc_now() - timedelta(minutes=5),
                    )
                cursor = batch.last_id
                held = [image.id for image in batch.images]
                claimed[run_id].extend(held)
                with workspace.transaction() as session:
                    write_scores(
                        session,
                        champion.id,
                        run_id,
                        [ImageScore(image_id, [0.1] * 5, []) for image_id in held],
                    )
                    release_claims(
                        session, run_id=run_id, model_version_id=champion.id, image_ids=held
                    )
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=run_through, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    every_claim = sorted(image_id for held in claimed.values() for image_id in held)
    assert len(every_claim) == len(set(every_claim)), "an image was held by two runs"
    assert query(workspace, "select count(*) from scores") == [(len(every_claim),)]


def test_a_claim_that_takes_over_a_silent_runs_images_ends_that_run_first(
    workspace: Workspace,
) -> None:
    """A run only slow, not dead, must learn at once that its images went to another run, or
    it would score them too."""
    champion = register_champion(workspace)
    put_tiny_images(workspace, 4)
    _register(workspace)
    silent_id, held = _claim_for_a_new_run(workspace, champion.id, timedelta(minutes=10), 4)
    with workspace.transaction() as session:
        run = start_run(session, "score", {})
        run.heartbeat_at = utc_now()
        session.flush()
        scope = ScoringScope(champion.id, "new", (workspace.store.root_uri,), run.started_at)
        batch = claim_images(
            session, scope, run_id=run.id, after_id=0, limit=4, live_after=utc_now() - LEASE
        )
        taken = [image.id for image in batch.images]
        cursor = batch.last_id
        # Images a dead run held come one at a time (one of them may be what killed it).
        while cursor is not None:
            more = claim_images(
                session,
                scope,
                run_id=run.id,
                after_id=cursor,
                limit=4,
                live_after=utc_now() - LEASE,
            )
            taken += [image.id for image in more.images]
            cursor = more.last_id

    assert taken == held and len(batch.images) == 1
    assert batch.dead_runs_ended == [silent_id]
    with workspace.transaction() as session:
        assert record_heartbeat(session, silent_id) is False


@pytest.mark.skipif(
    shutil.which("faketime") is None, reason="needs faketime (apt install faketime)"
)
def test_a_run_whose_clock_runs_two_minutes_ahead_ends_no_live_run(
    server_workspace: Workspace,
) -> None:
    workspace = server_workspace
    champion = register_champion(workspace)
    keys = put_tiny_images(workspace, IMAGES)
    honest = start_scoring_process(workspace.settings, pause=0.3)
    wait_until_ready(honest)
    deadline = time.monotonic() + 120
    while query(workspace, "select count(*) from scores") == [(0,)]:
        assert honest.poll() is None and time.monotonic() < deadline, "the run never scored"
        time.sleep(0.01)

    # Its own clock says it is two minutes later: a lease of 60 s would have run out for the
    # other run, were heartbeats and leases read on each client's clock.
    # The wall clock only: a machine whose clock is wrong still counts seconds right (and
    # Python started under a faked monotonic clock can hang).
    ahead = start_scoring_process(
        workspace.settings,
        pause=0.1,
        wrapper=["env", "FAKETIME_DONT_FAKE_MONOTONIC=1", "faketime", "-f", "+2m"],
    )
    wait_until_ready(ahead)
    reports = [finished_report(ahead), finished_report(honest)]

    assert [report["dead_runs_ended"] for report in reports] == [[], []]
    assert sum(report["scored"] for report in reports) == IMAGES
    assert score_counts(workspace, champion.id) == {workspace.store.uri(k): 1 for k in keys}
    assert query(workspace, "select status from runs where kind = 'score'") == [
        ("succeeded",),
        ("succeeded",),
    ]
