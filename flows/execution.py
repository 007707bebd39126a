"""How flows execute: where their tasks run, which runs may overlap, which failures are retried.

- Task runner: ``MLC_ORCHESTRATION__TASK_RUNNER=default`` keeps tasks in the flow run's process
  (Prefect's thread pool); ``dask`` sends them to the ``dask.distributed`` scheduler at
  ``MLC_ORCHESTRATION__DASK_ADDRESS`` through ``prefect-dask``. A flow picks its runner when it
  runs (``with task_runner_from_settings(...) as runner``), not when its module is imported,
  because a deployment's run imports the flow in a fresh process whose settings decide.
- Overlap: a scoring run holds a lock per prefix and a training the training lock, in mlc's
  own database (:mod:`mlc_core.jobs.locks`), whichever deployment, schedule or command started
  them. Prefect's global concurrency slots are not used for this: their leases live in the
  memory of the Prefect server, so on the embedded defaults (a temporary server that dies with
  the command) a killed run's slot stayed taken for good, and on a kept server a lease lasts at
  least a minute past its holder; a lock in the database is taken over once its holder's
  heartbeat is older than the claim lease.
- Retries: only errors that may pass by themselves (an unreachable store or database) are
  retried; a bad image or bad labels are not.
"""

from __future__ import annotations

from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from mlc_core.errors import DatabaseUnavailable, StoreUnavailable
from mlc_core.settings import OrchestrationSettings, load_settings

# Errors worth a retry: the same call may well succeed a minute later.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (StoreUnavailable, DatabaseUnavailable)
# Retry delays in seconds for tasks that talk to the store or the database.
TRANSIENT_RETRY_DELAYS: list[float] = [10.0, 60.0, 300.0]


def task_runner_from_settings(settings: OrchestrationSettings) -> TaskRunner[Any]:
    """The task runner the settings ask for, not started: use it as a context manager.

    Args:
        settings: ``task_runner`` and ``dask_address`` decide.

    Returns:
        A ``DaskTaskRunner`` connected to the configured scheduler, or Prefect's thread-pool
        runner. Submit shard tasks with ``runner.submit(task, parameters={...})`` inside
        ``with runner:``; a shard task should load the model once per worker process, not
        once per shard, and pass only small plain data in and out.
    """
    if settings.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        # The address is checked by the settings; a cluster started here would die with the
        # flow run and hide a missing scheduler.
        return DaskTaskRunner(address=settings.dask_address)
    # One task at a time: a shard already keeps the process busy (reads, inference and writes
    # overlap inside it), and Prefect's default pool would start every shard at once.
    return ThreadPoolTaskRunner(max_workers=1)


def retry_transient_errors(task: Any, task_run: Any, state: Any) -> bool:
    """A ``retry_condition_fn``: retry a task only when its error may pass by itself, and at
    most ``MLC_ORCHESTRATION__TRANSIENT_RETRIES`` times (read when the task fails, so the
    process that runs it decides, and 0 makes an interactive command fail at once)."""
    try:
        state.result()
    except TRANSIENT_ERRORS:
        return task_run.run_count <= load_settings().orchestration.transient_retries
    except BaseException:
        return False
    return False
