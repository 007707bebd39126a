"""Where tasks run and which failures are retried (overlapping runs: tests/jobs/test_locks.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from flows.execution import retry_transient_errors, task_runner_from_settings
from mlc_core.errors import ImageDecodeError, StoreUnavailable
from mlc_core.settings import load_settings
from tests.fixtures.prefect import PrefectServer


def test_the_default_task_runner_keeps_tasks_in_the_flow_process() -> None:
    runner = task_runner_from_settings(load_settings().orchestration)

    assert isinstance(runner, ThreadPoolTaskRunner)


def test_the_dask_task_runner_connects_to_the_configured_scheduler() -> None:
    settings = load_settings(
        orchestration={"task_runner": "dask", "dask_address": "tcp://scheduler:8786"}
    )

    runner = task_runner_from_settings(settings.orchestration)

    assert isinstance(runner, DaskTaskRunner)
    assert runner.address == "tcp://scheduler:8786"


@pytest.fixture
def dask_cluster() -> Iterator[str]:
    """A two-worker dask.distributed cluster in this process; its scheduler's address."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


@task
def _where_am_i(shard: int) -> tuple[int, str]:
    from distributed import get_worker

    return shard, get_worker().address


def test_tasks_submitted_through_the_dask_runner_run_on_the_cluster_workers(
    prefect_api: PrefectServer, dask_cluster: str
) -> None:
    settings = load_settings(orchestration={"task_runner": "dask", "dask_address": dask_cluster})

    @flow
    def sharded() -> list[tuple[int, str]]:
        with task_runner_from_settings(settings.orchestration) as runner:
            futures = [runner.submit(_where_am_i, {"shard": shard}) for shard in range(4)]
            return [future.result() for future in futures]

    results = sharded()

    assert [shard for shard, _ in results] == [0, 1, 2, 3]
    assert all(address.startswith("inproc://") for _, address in results)


def _attempts_of_a_task_raising(
    error: BaseException, monkeypatch: pytest.MonkeyPatch, retries_setting: int = 3
) -> int:
    """Run a task with three immediate retries that always raises ``error``; its attempts."""
    monkeypatch.setenv("MLC_ORCHESTRATION__TRANSIENT_RETRIES", str(retries_setting))
    attempts: list[int] = []

    @task(retries=3, retry_delay_seconds=0, retry_condition_fn=retry_transient_errors)
    def failing() -> None:
        attempts.append(1)
        raise error

    @flow
    def run_it() -> None:
        failing()

    with pytest.raises(type(error)):
        run_it()
    return len(attempts)


@pytest.mark.parametrize(
    ("error", "attempts"),
    [
        (StoreUnavailable("the bucket is unreachable"), 4),
        (ImageDecodeError("truncated image"), 1),
        (ValueError("a bug"), 1),
    ],
)
def test_only_errors_that_may_pass_by_themselves_are_retried(
    prefect_api: PrefectServer,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    attempts: int,
) -> None:
    assert _attempts_of_a_task_raising(error, monkeypatch) == attempts


def test_transient_retries_can_be_turned_down_for_an_interactive_run(
    prefect_api: PrefectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = StoreUnavailable("the bucket is unreachable")

    assert _attempts_of_a_task_raising(outage, monkeypatch, retries_setting=1) == 2
    assert _attempts_of_a_task_raising(outage, monkeypatch, retries_setting=0) == 1


def test_a_task_that_succeeds_is_not_retried(prefect_api: PrefectServer) -> None:
    calls: list[int] = []

    @task(retries=3, retry_delay_seconds=0, retry_condition_fn=retry_transient_errors)
    def fine() -> int:
        calls.append(1)
        return 7

    @flow
    def run_it() -> int:
        return fine()

    assert run_it() == 7 and calls == [1]
