"""kill -9 in the middle of a scoring run, then a rerun: every image ends with exactly one score
row for the champion, and no partial batch was ever visible."""

from __future__ import annotations

import json
import signal
import time

import pytest

from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.workspace import Workspace
from tests.jobs.scoring_support import (
    CLASSES,
    put_tiny_images,
    query,
    register_champion,
    score_counts,
    start_scoring_process,
    wait_until_ready,
)

IMAGES = 160
BATCH_SIZE = 8
# Short, so the rerun takes over the killed run's claims within a few seconds.
LEASE_SECONDS = 2.0
THRESHOLDS = [0.3, 0.4, 0.5, 0.6, 0.7]
SCORING = {"batch_size": BATCH_SIZE, "read_workers": 4, "claim_lease_seconds": LEASE_SECONDS}


@pytest.fixture
def workspace(each_backend: Workspace) -> Workspace:
    return each_backend


def _committed_scores(workspace: Workspace) -> int:
    [(count,)] = query(workspace, "select count(*) from scores")
    return int(count)


def _kill_after_some_batches(workspace: Workspace) -> int:
    """Start scoring in another process and SIGKILL it once two batches are committed."""
    process = start_scoring_process(workspace.settings, pause=0.05)
    try:
        wait_until_ready(process)
        deadline = time.monotonic() + 120
        while _committed_scores(workspace) < 2 * BATCH_SIZE:
            assert process.poll() is None, "the scoring process ended before it was killed"
            assert time.monotonic() < deadline, "no batch was committed within two minutes"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    [(run_id,)] = query(workspace, "select id from runs where kind = 'score'")
    return int(run_id)


def _assert_batches_are_whole(workspace: Workspace) -> None:
    """Scores, tags and statuses agree for every image: each batch committed all or nothing."""
    rows = query(
        workspace,
        "select images.id, images.status, scores.probabilities from images "
        "left join scores on scores.image_id = images.id",
    )
    tags: dict[int, set[str]] = {}
    for image_id, tag in query(workspace, "select image_id, tag from image_tags"):
        tags.setdefault(image_id, set()).add(tag)
    for image_id, status, probabilities in rows:
        if probabilities is None:
            assert status == "new" and image_id not in tags
            continue
        if isinstance(probabilities, str):
            probabilities = json.loads(probabilities)
        expected = {c for c, p, t in zip(CLASSES, probabilities, THRESHOLDS, strict=True) if p >= t}
        assert status == "scored" and tags.get(image_id, set()) == expected


def test_rerun_after_kill_9_scores_each_image_exactly_once(workspace: Workspace) -> None:
    champion = register_champion(workspace, thresholds=THRESHOLDS)
    keys = put_tiny_images(workspace, IMAGES)

    killed_run = _kill_after_some_batches(workspace)

    committed = query(
        workspace, "select count(*) from scores where run_id = :run_id", run_id=killed_run
    )[0][0]
    assert 0 < committed < IMAGES and committed % BATCH_SIZE == 0
    assert query(workspace, "select count(*) from score_claims")[0][0] > 0
    _assert_batches_are_whole(workspace)

    rerun = score_images(workspace)

    assert rerun.scored == IMAGES - committed
    assert rerun.dead_runs_ended == [killed_run]
    assert score_counts(workspace, champion.id) == {workspace.store.uri(k): 1 for k in keys}
    _assert_batches_are_whole(workspace)
    assert query(workspace, "select count(*) from score_claims") == [(0,)]
    assert query(workspace, "select status from runs where kind = 'score' order by id") == [
        ("failed",),
        ("succeeded",),
    ]
