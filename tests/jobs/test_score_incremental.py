"""Incremental scoring: only new and changed images are scored, reruns do nothing, deletions and
failed listings lose nothing. Run on the embedded defaults and on PostgreSQL + SeaweedFS."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import pytest

from mlc_core.errors import StorageError, StoreUnavailable
from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.workspace import Workspace
from tests.jobs.scoring_support import (
    put_tiny_images,
    query,
    register_champion,
    score_counts,
    tiny_jpeg,
)

SCORING = {"batch_size": 8, "read_workers": 4}


@pytest.fixture
def workspace(each_backend: Workspace) -> Workspace:
    return each_backend


def test_first_run_scores_every_image_and_a_rerun_scores_nothing(workspace: Workspace) -> None:
    champion = register_champion(workspace)
    keys = put_tiny_images(workspace, 20)

    first = score_images(workspace)
    again = score_images(workspace)

    assert (first.listed, first.new, first.scored, first.failed) == (20, 20, 20, 0)
    assert (again.listed, again.new, again.pending, again.scored) == (20, 0, 0, 0)
    assert score_counts(workspace, champion.id) == {workspace.store.uri(k): 1 for k in keys}


def test_only_new_and_changed_images_are_scored_by_the_next_run(workspace: Workspace) -> None:
    champion = register_champion(workspace)
    keys = put_tiny_images(workspace, 10)
    score_images(workspace)
    workspace.store.put("images/added.jpg", tiny_jpeg(100))
    workspace.store.put(keys[0], tiny_jpeg(200))

    report = score_images(workspace)

    assert (report.new, report.scored) == (2, 2)
    counts = score_counts(workspace, champion.id)
    assert counts[workspace.store.uri(keys[0])] == 2  # the old version's row and the new one's
    assert counts[workspace.store.uri("images/added.jpg")] == 1
    current = query(
        workspace,
        "select count(*) from images where uri = :uri and superseded_at is null",
        uri=workspace.store.uri(keys[0]),
    )
    assert current == [(1,)]


def test_a_deleted_object_leaves_the_views_and_keeps_its_rows(
    embedded_workspace: Workspace,
) -> None:
    register_champion(embedded_workspace, thresholds=[0.0001] * 5)
    keys = put_tiny_images(embedded_workspace, 6)
    score_images(embedded_workspace)
    tags_before = query(embedded_workspace, "select count(*) from image_tags")
    embedded_workspace.store.delete(keys[0])

    report = score_images(embedded_workspace)

    # The complete listing did not show it: retired, out of the views, rows kept.
    assert (report.listed, report.scored, report.skipped, report.retired) == (5, 0, {}, 1)
    assert query(embedded_workspace, "select count(*) from current_tags") == [(25,)]
    assert query(embedded_workspace, "select count(*) from image_tags") == tags_before
    assert query(embedded_workspace, "select uri from images where retired_at is not null") == [
        (embedded_workspace.store.uri(keys[0]),)
    ]


def test_several_prefixes_are_listed_and_scored_in_one_run(embedded_workspace: Workspace) -> None:
    champion = register_champion(embedded_workspace)
    put_tiny_images(embedded_workspace, 3, folder="cameras/north/")
    put_tiny_images(embedded_workspace, 4, folder="cameras/south/")
    put_tiny_images(embedded_workspace, 5, folder="elsewhere/")

    report = score_images(embedded_workspace, prefixes=["cameras/north/", "cameras/south/"])

    assert (report.listed, report.scored) == (7, 7)
    assert len(score_counts(embedded_workspace, champion.id)) == 7


def test_objects_without_an_image_extension_are_skipped_and_counted(
    embedded_workspace: Workspace,
) -> None:
    register_champion(embedded_workspace)
    put_tiny_images(embedded_workspace, 3)
    embedded_workspace.store.put("images/readme.txt", b"notes")
    embedded_workspace.store.put("images/photo.jpg.json", b"{}")

    report = score_images(embedded_workspace)

    assert (report.listed, report.scored, report.skipped) == (5, 3, {"not_an_image_type": 2})
    assert query(embedded_workspace, "select count(*) from images") == [(3,)]


def test_a_run_records_its_counts_and_throughput(embedded_workspace: Workspace) -> None:
    register_champion(embedded_workspace)
    put_tiny_images(embedded_workspace, 9)
    embedded_workspace.store.put("images/broken.jpg", b"<html>502 Bad Gateway</html>")

    report = score_images(embedded_workspace)

    [(status, counts)] = query(
        embedded_workspace, "select status, counts from runs where id = :id", id=report.run_id
    )
    counts = counts if isinstance(counts, dict) else json.loads(counts)
    assert status == "succeeded"
    assert {key: counts[key] for key in ("listed", "new", "scored", "failed", "skipped")} == {
        "listed": 10,
        "new": 10,
        "scored": 9,
        "failed": 1,
        "skipped": {},
    }
    assert counts["failed_by_reason"] == {"not an image": 1}
    assert counts["images_per_second"] > 0 and counts["scoring_images_per_second"] > 0


def _break_listing(workspace: Workspace) -> None:
    """Make the store's listing fail for real: no bucket, or a file where the folder was."""
    store = workspace.store
    if store.root_uri.startswith("s3://"):
        bucket = store.root_uri.split("/")[2]
        # The AWS_* variables of the s3_env fixture point boto3 at the test server.
        client = boto3.client("s3")
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)
    else:
        root = Path(store.url)
        shutil.rmtree(root)
        root.write_bytes(b"not a folder")


def test_a_listing_that_fails_fails_the_run_and_marks_nothing(workspace: Workspace) -> None:
    champion = register_champion(workspace, thresholds=[0.0001] * 5)
    put_tiny_images(workspace, 5)
    score_images(workspace)
    before = query(workspace, "select id, status, superseded_at from images order by id")
    tags_before = query(workspace, "select count(*) from current_tags")
    _break_listing(workspace)

    with pytest.raises(StorageError) as raised:
        score_images(workspace)

    assert isinstance(raised.value, StoreUnavailable)
    assert query(workspace, "select id, status, superseded_at from images order by id") == before
    assert query(workspace, "select count(*) from current_tags") == tags_before
    assert len(score_counts(workspace, champion.id)) == 5
    [(status, error)] = query(
        workspace, "select status, error from runs where kind = 'score' order by id desc limit 1"
    )
    assert status == "failed" and str(raised.value) == error


def test_an_empty_listing_where_images_were_known_marks_nothing_and_warns(
    workspace: Workspace,
) -> None:
    champion = register_champion(workspace, thresholds=[0.0001] * 5)
    keys = put_tiny_images(workspace, 5)
    score_images(workspace)
    for key in keys:
        workspace.store.delete(key)

    report = score_images(workspace)

    assert (report.listed, report.new, report.scored) == (0, 0, 0)
    assert len(report.warnings) == 1 and "nothing was retired" in report.warnings[0]
    assert query(workspace, "select count(*) from images where superseded_at is null") == [(5,)]
    assert len(score_counts(workspace, champion.id)) == 5
    assert query(workspace, "select count(distinct image_uri) from current_tags") == [(5,)]


def test_an_object_restored_to_an_earlier_version_is_current_again_without_rescoring(
    server_workspace: Workspace,
) -> None:
    # On S3 the etag is the content's MD5: the same bytes again are the same version.
    champion = register_champion(server_workspace)
    [key] = put_tiny_images(server_workspace, 1)
    original = server_workspace.store.get(key)
    score_images(server_workspace)
    server_workspace.store.put(key, tiny_jpeg(300))
    score_images(server_workspace)
    server_workspace.store.put(key, original)

    report = score_images(server_workspace)

    assert (report.new, report.scored) == (0, 0)
    assert score_counts(server_workspace, champion.id) == {server_workspace.store.uri(key): 2}
    [(etag,)] = query(server_workspace, "select etag from images where superseded_at is null")
    assert etag == server_workspace.store.head(key).etag
