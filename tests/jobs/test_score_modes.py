"""The scoring modes: new (default), stale, all and failed."""

from __future__ import annotations

import dataclasses

import pytest

from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.workspace import Workspace
from tests.jobs.scoring_support import (
    put_tiny_images,
    query,
    register_champion,
    score_counts,
    tiny_jpeg,
)

SCORING = {"batch_size": 4, "read_workers": 2}


@pytest.fixture
def workspace(embedded_workspace: Workspace) -> Workspace:
    return embedded_workspace


def _with_pixel_limit(workspace: Workspace, max_pixels: int) -> Workspace:
    scoring = workspace.settings.scoring.model_copy(update={"max_image_pixels": max_pixels})
    settings = workspace.settings.model_copy(update={"scoring": scoring})
    return dataclasses.replace(workspace, settings=settings)


def test_new_mode_scores_only_images_the_champion_has_not_scored(workspace: Workspace) -> None:
    register_champion(workspace)
    put_tiny_images(workspace, 5)
    score_images(workspace)
    workspace.store.put("images/later.jpg", tiny_jpeg(50))

    report = score_images(workspace, mode="new")

    assert (report.pending, report.scored) == (1, 1)


def test_stale_mode_scores_images_scored_only_by_an_older_version(workspace: Workspace) -> None:
    register_champion(workspace, "v1")
    put_tiny_images(workspace, 5)
    score_images(workspace)
    champion = register_champion(workspace, "v2")
    workspace.store.put("images/never-scored.jpg", tiny_jpeg(50))

    stale = score_images(workspace, mode="stale")
    new = score_images(workspace, mode="new")

    assert (stale.scored, new.scored) == (5, 1)
    assert workspace.store.uri("images/never-scored.jpg") not in _uris_scored_by(
        workspace, stale.run_id
    )
    assert set(score_counts(workspace, champion.id).values()) == {1}


def _uris_scored_by(workspace: Workspace, run_id: int | None) -> set[str]:
    rows = query(
        workspace,
        "select images.uri from scores join images on images.id = scores.image_id "
        "where scores.run_id = :run_id",
        run_id=run_id,
    )
    return {uri for (uri,) in rows}


def test_all_mode_rescores_every_image_once_replacing_the_champions_rows(
    workspace: Workspace,
) -> None:
    champion = register_champion(workspace)
    keys = put_tiny_images(workspace, 6)
    first = score_images(workspace)

    again = score_images(workspace, mode="all")

    assert (again.pending, again.scored) == (6, 6)
    assert score_counts(workspace, champion.id) == {workspace.store.uri(k): 1 for k in keys}
    assert query(workspace, "select distinct run_id from scores") == [(again.run_id,)]
    assert first.run_id != again.run_id


def test_failed_mode_retries_failures_and_new_mode_does_not(workspace: Workspace) -> None:
    register_champion(workspace)
    put_tiny_images(workspace, 3)
    strict = _with_pixel_limit(workspace, 100)  # below the 32x32 images
    failing = score_images(strict)
    relaxed = _with_pixel_limit(workspace, 10_000)

    new = score_images(relaxed, mode="new")
    failed = score_images(relaxed, mode="failed")

    assert (failing.scored, failing.failed) == (0, 3)
    assert (new.pending, new.scored) == (0, 0)
    assert (failed.pending, failed.scored, failed.failed) == (3, 3, 0)
    assert query(workspace, "select count(*) from scoring_failures") == [(0,)]


def test_an_image_failing_again_in_failed_mode_keeps_a_readable_reason(
    workspace: Workspace,
) -> None:
    register_champion(workspace)
    workspace.store.put("images/page.jpg", b"<!DOCTYPE html><html>Service Unavailable</html>")
    score_images(workspace)
    [(first_failed_at,)] = query(workspace, "select failed_at from scoring_failures")

    retry = score_images(workspace, mode="failed")

    assert (retry.pending, retry.failed) == (1, 1)
    [(error, failed_at)] = query(workspace, "select error, failed_at from scoring_failures")
    assert error == "not an image: the file starts like an HTML page"
    assert failed_at != first_failed_at
