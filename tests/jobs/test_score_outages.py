"""A store or database that goes away mid-run fails the run with a clear error and leaves only
whole batches; once it is back, the next run completes. Real outages: the S3 bucket is deleted,
PostgreSQL stops accepting connections to the database."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import boto3
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from mlc_core.errors import DatabaseUnavailable, StoreUnavailable
from mlc_core.jobs.scoring import ScoreProgress, score_images
from mlc_core.jobs.workspace import Workspace
from tests.jobs.scoring_support import (
    put_tiny_images,
    query,
    register_champion,
    score_counts,
    tiny_jpeg,
    tiny_model_file,
)

IMAGES = 64
BATCH_SIZE = 4
SCORING = {"batch_size": BATCH_SIZE, "read_workers": 2, "claim_lease_seconds": 2.0}


@pytest.fixture
def workspace(server_workspace: Workspace) -> Workspace:
    return server_workspace


def _once_a_batch_is_committed(
    workspace: Workspace, action: Callable[[], None]
) -> Callable[[ScoreProgress], None]:
    """A progress callback that runs ``action`` once, when the first batch is in the database."""
    done: list[bool] = []

    def on_progress(progress: ScoreProgress) -> None:
        if done:
            return
        deadline = time.monotonic() + 30
        while query(workspace, "select count(*) from scores") == [(0,)]:
            assert time.monotonic() < deadline, "the first batch was not committed in 30 s"
            time.sleep(0.01)
        done.append(True)
        action()

    return on_progress


def _delete_bucket(workspace: Workspace) -> None:
    bucket = workspace.store.root_uri.split("/")[2]
    # The AWS_* variables of the s3_env fixture point boto3 at the test server.
    client = boto3.client("s3")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)


def _assert_only_whole_batches(workspace: Workspace, run_id: int | None) -> None:
    [(committed,)] = query(
        workspace, "select count(*) from scores where run_id = :run_id", run_id=run_id
    )
    assert 0 < committed < IMAGES and committed % BATCH_SIZE == 0
    [(scored,)] = query(workspace, "select count(*) from images where status = 'scored'")
    assert scored == committed


def test_a_store_that_goes_away_mid_run_fails_it_and_the_next_run_completes(
    workspace: Workspace,
) -> None:
    champion = register_champion(workspace)
    keys = put_tiny_images(workspace, IMAGES)

    with pytest.raises(StoreUnavailable, match="does not exist") as raised:
        score_images(
            workspace,
            on_progress=_once_a_batch_is_committed(workspace, lambda: _delete_bucket(workspace)),
        )

    [(run_id, status, error)] = query(workspace, "select id, status, error from runs")
    assert status == "failed" and error == str(raised.value)
    _assert_only_whole_batches(workspace, run_id)
    assert query(workspace, "select count(*) from score_claims") == [(0,)]

    # The bucket is restored with the same objects (same bytes, same etags).
    boto3.client("s3").create_bucket(Bucket=workspace.store.root_uri.split("/")[2])
    workspace.store.put("models/v1/model.keras", tiny_model_file()[0])
    for index, key in enumerate(keys):
        workspace.store.put(key, tiny_jpeg(index))
    rerun = score_images(workspace)

    assert rerun.new == 0 and rerun.scored > 0
    assert score_counts(workspace, champion.id) == {workspace.store.uri(k): 1 for k in keys}


def test_a_database_that_goes_away_mid_run_fails_it_and_the_next_run_completes(
    workspace: Workspace, postgres_server_url: URL
) -> None:
    champion = register_champion(workspace)
    keys = put_tiny_images(workspace, IMAGES)
    database = workspace.engine.url.database
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")

    def refuse_connections() -> None:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            connection.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
            )

    try:
        with pytest.raises(DatabaseUnavailable, match=r"lost the database at .* rerun once"):
            score_images(
                workspace, on_progress=_once_a_batch_is_committed(workspace, refuse_connections)
            )
        with admin.connect() as connection:
            connection.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    finally:
        admin.dispose()

    [(first_run,)] = query(workspace, "select id from runs")
    _assert_only_whole_batches(workspace, first_run)
    rerun = score_images(workspace)

    assert rerun.dead_runs_ended == [first_run]
    assert score_counts(workspace, champion.id) == {workspace.store.uri(k): 1 for k in keys}
    [(counts,)] = query(workspace, "select counts from runs where id = :id", id=rerun.run_id)
    counts = counts if isinstance(counts, dict) else json.loads(counts)
    assert counts["scored"] == rerun.scored
