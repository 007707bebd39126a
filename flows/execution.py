"""How flows execute: where their tasks run, which runs may overlap, which failures are retried.

- Task runner: ``MLC_ORCHESTRATION__TASK_RUNNER=default`` keeps tasks in the flow run's process
  (Prefect's thread pool); ``dask`` sends them to the ``dask.distributed`` scheduler at
  ``MLC_ORCHESTRATION__DASK_ADDRESS`` through ``prefect-dask``. A flow picks its runner when it
  runs (``with task_runner_from_settings(...) as runner``), not when its module is imported,
  because a deployment's run imports the flow in a fresh process whose settings decide.
- Concurrency: Prefect global concurrency limits of one slot, created on first use. A scoring
  run holds one per prefix (``mlc-score-...``), so two runs over the same prefix never overlap
  whichever deployment, schedule or command started them, while different prefixes still run
  side by side; a retrain holds ``mlc-retrain``.
- Retries: only errors that may pass by themselves (an unreachable store or database) are
  retried; a bad image or bad labels are not.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from mlc_core.errors import DatabaseUnavailable, StoreUnavailable
from mlc_core.settings import OrchestrationSettings, load_settings
from mlc_core.storage import validate_prefix

SCORE_LIMIT_PREFIX = "mlc-score-"
TRAINING_LIMIT = "mlc-retrain"
# Errors worth a retry: the same call may well succeed a minute later.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (StoreUnavailable, DatabaseUnavailable)
# Retry delays in seconds for tasks that talk to the store or the database.
TRANSIENT_RETRY_DELAYS: list[float] = [10.0, 60.0, 300.0]
# Characters Prefect allows in a concurrency limit's name besides letters and digits.
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


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


def score_limit_name(prefix: str) -> str:
    """The global concurrency limit a scoring run over ``prefix`` holds.

    Prefect forbids '/' and a few other characters in names, so the readable part is
    sanitized and a hash of the exact prefix keeps distinct prefixes apart.

    Raises:
        InvalidKey: ``prefix`` is not a valid store prefix.
    """
    validate_prefix(prefix)
    readable = _UNSAFE_NAME_CHARACTERS.sub("_", prefix).strip("_")[:60] or "all"
    digest = hashlib.sha256(prefix.encode()).hexdigest()[:10]
    return f"{SCORE_LIMIT_PREFIX}{readable}-{digest}"


def _ensure_single_slot_limits(names: Sequence[str]) -> None:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        for name in names:
            # A limit made by an earlier run (or one racing us) stands as it is, so an
            # operator may raise it in the UI to allow overlapping runs on purpose.
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )


@contextmanager
def exclusive_slots(
    names: Sequence[str], *, timeout_seconds: float | None = None
) -> Iterator[None]:
    """Hold one slot of each named single-slot limit while the block runs.

    All slots are taken in one request or none is, so two runs asking for overlapping sets
    cannot deadlock. A run that finds them taken waits (forever by default) and says so.

    Raises:
        TimeoutError: the slots were not free within ``timeout_seconds``.
    """
    unique = sorted(set(names))
    _ensure_single_slot_limits(unique)
    logger = get_run_logger()
    logger.info("waiting for concurrency slot(s) %s", ", ".join(unique))
    # A lease renewal that fails once (an API blip) must not kill an hour of scoring; the slot
    # is only at risk if the API stays away for the whole lease.
    with concurrency(
        unique,
        occupy=1,
        timeout_seconds=timeout_seconds,
        strict=True,
        raise_on_lease_renewal_failure=False,
    ):
        logger.info("holding concurrency slot(s) %s", ", ".join(unique))
        yield


@contextmanager
def scoring_slots(
    prefixes: Sequence[str], *, timeout_seconds: float | None = None
) -> Iterator[None]:
    """Keep other scoring runs off ``prefixes`` while the block runs.

    Args:
        prefixes: the store prefixes the run scores (already defaulted from the settings).
        timeout_seconds: give up waiting after this long; ``None`` waits as long as it takes.
    """
    with exclusive_slots(
        [score_limit_name(prefix) for prefix in prefixes], timeout_seconds=timeout_seconds
    ):
        yield


@contextmanager
def training_slot(*, timeout_seconds: float | None = None) -> Iterator[None]:
    """Keep other retrains from running while the block runs (they would race for a version)."""
    with exclusive_slots([TRAINING_LIMIT], timeout_seconds=timeout_seconds):
        yield
