"""The work-pool path: infra/prefect.yaml deployed, and a process worker running a deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import REPO_ROOT, Stack
from tests.fixtures.prefect import PrefectServer

pytestmark = pytest.mark.slow

POOL = "mlc-process"


def _check(completed: object, log: Path) -> None:
    assert getattr(completed, "returncode", 1) == 0, log.read_text()[-4000:]


def test_a_process_worker_runs_a_deployment_declared_in_prefect_yaml(
    e2e_stack: Stack, prefect_api: PrefectServer
) -> None:
    from prefect.client.orchestration import get_client

    log = e2e_stack.workdir / "work-pool.log"
    _check(
        e2e_stack.run(
            "prefect", "work-pool", "create", POOL, "--type", "process", "--overwrite", log=log
        ),
        log,
    )
    _check(
        e2e_stack.run(
            "prefect",
            "deploy",
            "--prefect-file",
            str(REPO_ROOT / "infra" / "prefect.yaml"),
            "--all",
            log=log,
        ),
        log,
    )
    _check(
        e2e_stack.run(
            "prefect",
            "deployment",
            "run",
            "mlc-nightly/nightly",
            "--param",
            "retrain=never",
            log=log,
        ),
        log,
    )

    _check(
        e2e_stack.run(
            "prefect", "worker", "start", "--pool", POOL, "--run-once", log=log, timeout=420
        ),
        log,
    )

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("mlc-nightly/nightly")
        flow_runs: list[Any] = client.read_flow_runs(
            deployment_filter=_deployment_filter(deployment.id),
            flow_run_filter=_not_scheduled(),
        )
    [flow_run] = flow_runs
    assert deployment.work_pool_name == POOL
    assert flow_run.parameters == {"retrain": "never"}
    assert flow_run.state.is_completed(), f"{flow_run.state.message}\n{log.read_text()[-4000:]}"


def _deployment_filter(deployment_id: Any) -> Any:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))


def _not_scheduled() -> Any:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    return FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED]))
    )
