"""One object never stops a run: refused, linked, oversized, rewritten or crashing objects are
each that image's outcome, and the rest of the run goes on."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from mlc_core.db.claims import claim_images
from mlc_core.db.engine import database_now
from mlc_core.db.models import Run
from mlc_core.db.pending import ScoringScope
from mlc_core.db.runs import start_run
from mlc_core.errors import MlcError
from mlc_core.jobs.scoring import ScoreReport, score_images
from mlc_core.jobs.scoring.discovery import discover_images
from mlc_core.jobs.workspace import Workspace
from mlc_core.settings import load_settings
from mlc_core.storage import LocalStore
from tests.jobs.scoring_support import (
    opened,
    put_tiny_images,
    query,
    register_champion,
    score_counts,
    tiny_jpeg,
)

SCORING = {"batch_size": 4, "read_workers": 2}


def _failures(workspace: Workspace) -> dict[str, str]:
    return {
        uri.rsplit("/", 1)[-1]: error
        for uri, error in query(workspace, "select image_uri, error from scoring_failures")
    }


def test_an_object_the_identity_may_not_read_is_a_failure_and_the_rest_is_scored(
    isolated_mlc_environment: Path, limited_s3_store_url: str
) -> None:
    settings = load_settings(storage_url=limited_s3_store_url, scoring=SCORING)
    with opened(settings) as workspace:
        champion = register_champion(workspace)
        readable = put_tiny_images(workspace, 3, folder="images/readable/")
        workspace.store.put("images/secret/denied.jpg", tiny_jpeg(9))

        report = score_images(workspace)

        assert (report.scored, report.failed) == (3, 1)
        assert report.failed_by_reason == {"access denied": 1}
        assert "may list the store but not read it" in _failures(workspace)["denied.jpg"]
        assert len(score_counts(workspace, champion.id)) == len(readable)
        assert query(workspace, "select status from runs") == [("succeeded",)]


def test_a_symbolic_link_and_an_oversized_object_are_failures_with_their_reasons(
    embedded_workspace: Workspace, tmp_path: Path
) -> None:
    workspace = embedded_workspace
    register_champion(workspace)
    put_tiny_images(workspace, 3)
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(tiny_jpeg(7))
    assert isinstance(workspace.store, LocalStore)
    (workspace.store.root / "images" / "escape.jpg").symlink_to(outside)
    workspace.store.put("images/huge.jpg", tiny_jpeg(8, side=512))
    huge_size = workspace.store.head("images/huge.jpg").size
    limited = workspace.settings.model_copy(
        update={
            "scoring": workspace.settings.scoring.model_copy(
                update={"max_object_bytes": huge_size - 1}
            )
        }
    )

    report = score_images(Workspace(limited, workspace.engine, workspace.store))

    failures = _failures(workspace)
    assert (report.scored, report.failed) == (3, 2)
    assert failures["escape.jpg"].startswith("symbolic link:")
    assert failures["huge.jpg"].startswith("too large:")
    assert "MLC_SCORING__MAX_OBJECT_BYTES" in failures["huge.jpg"]


def test_an_object_rewritten_between_listing_and_read_waits_for_the_next_listing(
    embedded_workspace: Workspace,
) -> None:
    workspace = embedded_workspace
    champion = register_champion(workspace)
    [key] = put_tiny_images(workspace, 1)
    discover_images(workspace, ["images/"], ScoreReport("v1", "new", ["images/"]))
    workspace.store.put(key, tiny_jpeg(99))  # new bytes, a new etag

    first = score_images(workspace, discover=False)

    # The old version's row never gets the new bytes' scores; nothing failed.
    assert (first.scored, first.failed, first.skipped) == (0, 0, {"changed_since_listing": 1})
    second = score_images(workspace)
    assert (second.new, second.scored) == (1, 1)
    assert score_counts(workspace, champion.id) == {workspace.store.uri(key): 1}
    [(etag,)] = query(workspace, "select etag from images where superseded_at is null")
    assert etag == workspace.store.head(key).etag


def _abandon_claims(workspace: Workspace, model_version_id: int, times: int) -> list[Any]:
    """Claim the image ``times`` times for runs that then die holding it."""
    batches = []
    for _ in range(times):
        with workspace.transaction() as session:
            run = start_run(session, "score", {})
            scope = ScoringScope(
                model_version_id, "new", (workspace.store.root_uri,), database_now(session)
            )
            batch = claim_images(
                session,
                scope,
                run_id=run.id,
                after_id=0,
                limit=4,
                live_after=database_now(session) - timedelta(seconds=60),
                max_abandoned_claims=3,
            )
            batches.append(batch)
            # The run dies holding its claim: its heartbeat stops ten minutes ago.
            session.execute(
                update(Run)
                .where(Run.id == run.id)
                .values(heartbeat_at=database_now(session) - timedelta(minutes=10))
            )
    return batches


def test_an_image_that_keeps_killing_its_scorer_is_given_up_and_claimed_alone_meanwhile(
    embedded_workspace: Workspace,
) -> None:
    workspace = embedded_workspace
    champion = register_champion(workspace)
    put_tiny_images(workspace, 3)
    discover_images(workspace, ["images/"], ScoreReport("v1", "new", ["images/"]))

    first, second, third, fourth = _abandon_claims(workspace, champion.id, 4)

    # The first claim takes the whole batch; once the run holding it died, each image is
    # claimed on its own, so one that kills the scorer takes no other image with it.
    assert [len(batch.images) for batch in (first, second, third)] == [3, 1, 1]
    assert fourth.images == [] and fourth.given_up == [first.images[0].id]
    [(error,)] = query(workspace, "select error from scoring_failures")
    assert error.startswith("crashed the scorer 3 times")
    report = score_images(workspace)
    assert (report.scored, report.failed) == (2, 0)


class _HangingStore(LocalStore):
    """A local store whose read of one key blocks until released, as a hung mount would."""

    def __init__(self, root: Path, hanging_key: str) -> None:
        super().__init__(root)
        self.hanging_key = hanging_key
        self.release = threading.Event()

    def get(self, key: str, **options: Any) -> bytes:
        if key == self.hanging_key:
            self.release.wait(120)
        return super().get(key, **options)


def test_a_run_wedged_in_a_read_ends_itself_and_frees_its_claims(
    isolated_mlc_environment: Path,
) -> None:
    lease = 2.0
    settings = load_settings(scoring={**SCORING, "claim_lease_seconds": lease})
    with opened(settings) as workspace:
        champion = register_champion(workspace)
        keys = put_tiny_images(workspace, 12)
        hanging = _HangingStore(workspace.store.root, keys[5])  # type: ignore[attr-defined]
        wedged = Workspace(settings, workspace.engine, hanging)
        started = time.monotonic()
        try:
            with pytest.raises(MlcError, match="made no progress"):
                score_images(wedged)
            took = time.monotonic() - started
        finally:
            hanging.release.set()
        assert took < 60
        assert query(workspace, "select status from runs") == [("failed",)]
        assert query(workspace, "select count(*) from score_claims") == [(0,)]
        rerun = score_images(workspace)
        assert len(score_counts(workspace, champion.id)) == 12 and rerun.dead_runs_ended == []
