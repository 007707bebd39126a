"""The score flow scores shards, each a run of its own, in its process or on a Dask cluster."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from flows.progress import progress_sink
from flows.score import score_flow
from mlc_core.jobs.workspace import Workspace
from mlc_core.settings import Settings, load_settings
from tests.fixtures.postgres import fresh_database
from tests.fixtures.prefect import PrefectServer
from tests.jobs.scoring_support import (
    migrate,
    opened,
    put_tiny_images,
    query,
    register_champion,
    score_counts,
    server_settings,
)

IMAGES = 23
SHARD_SIZE = 5
SHARDS = math.ceil(IMAGES / SHARD_SIZE)
BATCH_SIZE = 2


@pytest.fixture
def sharded_scoring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards of a few images, each of several batches, read by few threads."""
    monkeypatch.setenv("MLC_SCORING__SHARD_SIZE", str(SHARD_SIZE))
    monkeypatch.setenv("MLC_SCORING__BATCH_SIZE", str(BATCH_SIZE))
    monkeypatch.setenv("MLC_SCORING__READ_WORKERS", "2")


def _json(value: Any) -> Any:
    return value if isinstance(value, dict | list) else json.loads(value)


def _shard_runs(workspace: Workspace) -> list[tuple[int, str, dict[str, Any]]]:
    rows = query(workspace, "select id, status, parameters from runs where kind = 'score'")
    return [(run_id, status, _json(parameters)) for run_id, status, parameters in rows]


def test_the_flow_scores_every_image_once_across_several_shard_runs(
    prefect_api: PrefectServer, sharded_scoring: None
) -> None:
    with opened(load_settings()) as workspace:
        champion = register_champion(workspace)
        keys = put_tiny_images(workspace, IMAGES)

        report = score_flow()

        assert report.scored == IMAGES and report.pending == IMAGES
        assert score_counts(workspace, champion.id) == {workspace.store.uri(k): 1 for k in keys}
        runs = _shard_runs(workspace)
        assert sorted(run_id for run_id, _, _ in runs) == report.run_ids
        assert len(runs) == SHARDS
        assert {status for _, status, _ in runs} == {"succeeded"}
        ranges = {run_id: parameters["image_ids"] for run_id, _, parameters in runs}
        for image_id, run_id in query(workspace, "select image_id, run_id from scores"):
            first, last = ranges[run_id]
            assert first <= image_id <= last
        assert query(workspace, "select count(*) from score_claims") == [(0,)]


def test_rescoring_all_images_in_shards_replaces_each_row_once(
    prefect_api: PrefectServer, sharded_scoring: None
) -> None:
    with opened(load_settings()) as workspace:
        champion = register_champion(workspace)
        keys = put_tiny_images(workspace, IMAGES)
        first = score_flow()

        again = score_flow(mode="all")

        assert again.scored == IMAGES and len(again.run_ids) == SHARDS
        assert score_counts(workspace, champion.id) == {workspace.store.uri(k): 1 for k in keys}
        written_by = {run_id for (run_id,) in query(workspace, "select run_id from scores")}
        assert written_by == set(again.run_ids) and not written_by & set(first.run_ids)


def test_shards_in_the_flow_process_report_progress_batch_by_batch(
    prefect_api: PrefectServer, sharded_scoring: None
) -> None:
    with opened(load_settings()) as workspace:
        register_champion(workspace)
        put_tiny_images(workspace, IMAGES)
    events: list[tuple[int, int]] = []

    with progress_sink(lambda kind, event: events.append((event.done, event.total))):
        score_flow()

    assert len(events) > SHARDS
    assert [done for done, _ in events] == sorted(done for done, _ in events)
    assert {total for _, total in events} == {IMAGES}
    assert events[-1] == (IMAGES, IMAGES)


@pytest.fixture
def second_postgres_url(postgres_server_url: URL) -> Iterator[str]:
    """Another fresh PostgreSQL database (``postgres_url`` gives one per test)."""
    with fresh_database(postgres_server_url) as url:
        yield url


WRITTEN_ROWS = {
    "scores": (
        "select images.uri, model_versions.version, scores.probabilities from scores "
        "join images on images.id = scores.image_id "
        "join model_versions on model_versions.id = scores.model_version_id order by images.uri"
    ),
    "tags": (
        "select images.uri, model_versions.version, image_tags.tag, image_tags.probability "
        "from image_tags join images on images.id = image_tags.image_id "
        "join model_versions on model_versions.id = image_tags.model_version_id "
        "order by images.uri, image_tags.tag"
    ),
    "images": "select uri, etag, status, error from images order by uri",
}


def _written_rows(workspace: Workspace) -> dict[str, list[tuple[Any, ...]]]:
    rows = {name: query(workspace, sql) for name, sql in WRITTEN_ROWS.items()}
    rows["scores"] = [(uri, version, _json(p)) for uri, version, p in rows["scores"]]
    return rows


def _use_database(monkeypatch: pytest.MonkeyPatch, home: Path, database_url: str) -> Settings:
    """Point the flow (and the workers started after this) at ``database_url``."""
    storage_url = str(home / "store")
    monkeypatch.setenv("MLC_DATABASE_URL", database_url)
    monkeypatch.setenv("MLC_STORAGE_URL", storage_url)
    migrate(database_url)
    settings: Settings = server_settings(home, database_url, storage_url)
    return settings


def test_a_two_worker_dask_cluster_writes_the_rows_a_single_process_run_writes(
    prefect_api: PrefectServer,
    isolated_mlc_environment: Path,
    sharded_scoring: None,
    postgres_url: str,
    second_postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from distributed import Client, LocalCluster

    home = isolated_mlc_environment
    single_settings = _use_database(monkeypatch, home, second_postgres_url)
    with opened(single_settings) as single:
        register_champion(single)
        put_tiny_images(single, IMAGES)
        single.store.put("images/broken.jpg", b"<html>502 Bad Gateway</html>")
        single_report = score_flow()
        single_rows = _written_rows(single)

    dask_settings = _use_database(monkeypatch, home, postgres_url)
    with opened(dask_settings) as clustered:
        register_champion(clustered)
        # Workers are separate processes that read their settings from the environment they
        # were started with, as workers on other machines would.
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            monkeypatch.setenv("MLC_ORCHESTRATION__TASK_RUNNER", "dask")
            monkeypatch.setenv("MLC_ORCHESTRATION__DASK_ADDRESS", cluster.scheduler_address)
            dask_report = score_flow()
            worker_pids = set(client.run(os.getpid).values())
        dask_rows = _written_rows(clustered)
        runs = _shard_runs(clustered)

    assert dask_report.scored == single_report.scored == IMAGES
    assert dask_report.failed == single_report.failed == 1
    assert dask_rows["images"] == single_rows["images"]
    assert [row[:2] for row in dask_rows["scores"]] == [row[:2] for row in single_rows["scores"]]
    for (_, _, clustered_probabilities), (_, _, single_probabilities) in zip(
        dask_rows["scores"], single_rows["scores"], strict=True
    ):
        assert clustered_probabilities == pytest.approx(single_probabilities, abs=1e-6)
    # The untrained champion puts most probabilities just above 0.5: some tags, not all.
    assert 0 < len(single_rows["tags"]) < IMAGES * 5
    assert [row[:3] for row in dask_rows["tags"]] == [row[:3] for row in single_rows["tags"]]
    assert [row[3] for row in dask_rows["tags"]] == pytest.approx(
        [row[3] for row in single_rows["tags"]], abs=1e-6
    )
    assert len(runs) == math.ceil((IMAGES + 1) / SHARD_SIZE)
    assert {status for _, status, _ in runs} == {"succeeded"}
    assert {parameters["pid"] for _, _, parameters in runs} == worker_pids
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
