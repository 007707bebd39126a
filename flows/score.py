"""Flow: score new images in the store with the champion model, a shard per task.

The flow discovers once (a task in the flow's process), then submits one task per shard of
pending images through the configured task runner: in the flow's process by default, on a
``dask.distributed`` cluster with ``MLC_ORCHESTRATION__TASK_RUNNER=dask``. A shard is a few
ids and names, and its task returns a small dict of counts; images and probabilities go
straight between the worker, the store and the database. A worker opens the store and the
database from its own ``MLC_`` settings, so credentials never travel through Prefect.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from flows.artifacts import ScoreProgressArtifact, publish_score_summary
from flows.common import opened_workspace
from flows.execution import (
    TRANSIENT_RETRY_DELAYS,
    retry_transient_errors,
    task_runner_from_settings,
)
from flows.progress import ProgressRelay
from mlc_core.jobs.locks import holding_locks, scoring_lock_names
from mlc_core.jobs.scoring import (
    ScoreProgress,
    ScoreReport,
    ScoringPlan,
    ScoringShard,
    ShardTally,
    plan_scoring,
    score_shard,
)
from mlc_core.settings import OrchestrationSettings, load_settings

ScoreModeParameter = Literal["new", "stale", "all", "failed"]

# Set by the flow while its shards run. A shard task in the flow's own process (the default
# runner copies the flow's context into its thread) reports every batch through it, so a
# terminal's progress bar moves batch by batch; on a Dask worker it is unset, and progress
# moves as shards finish.
_shard_batch_progress: ContextVar[Callable[[int, ScoreProgress], None] | None] = ContextVar(
    "mlc_shard_batch_progress", default=None
)


def _batch_progress_of(shard: ScoringShard) -> Callable[[ScoreProgress], None] | None:
    # A module-level function, so a task pickled for a Dask worker refers to it by name
    # rather than carrying the context variable (which cannot be pickled) along.
    report = _shard_batch_progress.get()
    if report is None:
        return None
    return lambda progress: report(shard.index, progress)


# Scoring must run every time it is asked to: never served from a cache of an earlier run.
@task(
    name="mlc-score-plan",
    retries=len(TRANSIENT_RETRY_DELAYS),
    retry_delay_seconds=TRANSIENT_RETRY_DELAYS,
    retry_condition_fn=retry_transient_errors,
    cache_policy=NO_CACHE,
)
def plan_task(
    prefixes: list[str],
    mode: ScoreModeParameter,
    batch_size: int | None,
    discover: bool,
    force_retire: bool,
    start_after: str | None = None,
) -> ScoringPlan:
    """Register the images under ``prefixes`` and split the pending ones into shards."""
    with opened_workspace() as workspace:
        return plan_scoring(
            workspace,
            prefixes=prefixes,
            mode=mode,
            batch_size=batch_size,
            discover=discover,
            force_retire=force_retire,
            start_after=start_after,
        )


@task(
    name="mlc-score-shard",
    task_run_name="score shard {shard.index}",
    retries=len(TRANSIENT_RETRY_DELAYS),
    retry_delay_seconds=TRANSIENT_RETRY_DELAYS,
    retry_condition_fn=retry_transient_errors,
    cache_policy=NO_CACHE,
)
def shard_task(shard: ScoringShard) -> ScoreReport:
    """Score one shard where the task runner put it; returns the shard run's counts."""
    with opened_workspace() as workspace:
        report = score_shard(workspace, shard, on_progress=_batch_progress_of(shard))
    get_run_logger().info(
        "shard %d (image ids %d-%d): scored %d, failed %d in %.1f s (run %s)",
        shard.index,
        shard.first_image_id,
        shard.last_image_id,
        report.scored,
        report.failed,
        report.seconds,
        report.run_id,
    )
    return report


def _run_shards(
    plan: ScoringPlan,
    orchestration: OrchestrationSettings,
    tally: ShardTally,
    on_progress: Callable[[ScoreProgress], None],
) -> list[BaseException]:
    """Score every shard through the configured task runner; returns the shards' errors."""
    if not plan.shards:
        return []
    failures: list[BaseException] = []
    token = _shard_batch_progress.set(
        lambda index, progress: on_progress(tally.running(index, progress))
    )
    try:
        with task_runner_from_settings(orchestration) as runner:
            futures = {runner.submit(shard_task, {"shard": shard}): shard for shard in plan.shards}
            # Every shard runs to its end even when one fails: the others' work is kept, and
            # the failed shard's images stay pending for the next run.
            for future in as_completed(list(futures)):
                try:
                    result = future.result()
                except Exception as error:
                    failures.append(error)
                    continue
                on_progress(tally.add(futures[future].index, result))
    finally:
        _shard_batch_progress.reset(token)
    return failures


@flow(name="mlc-score")
def score_flow(
    prefixes: list[str] | None = None,
    mode: ScoreModeParameter = "new",
    batch_size: int | None = None,
    discover: bool = True,
    force_retire: bool = False,
    since: str | None = None,
) -> ScoreReport:
    """Score images under ``prefixes`` (default: the images prefix) with the champion.

    Args:
        prefixes: key prefixes in the store to score.
        mode: new (not yet scored by the champion), stale (scored only by older models), all,
            or failed (retry images that failed before).
        batch_size: images per claim and per database transaction (the model scores them in
            forward passes of MLC_SCORING__INFERENCE_BATCH_SIZE).
        discover: list the store first; off, only the images registered already are scored.
        force_retire: retire the images a complete listing did not show even when they are
            more than MLC_SCORING__MAX_RETIRE_FRACTION of a prefix.
        since: list only the keys after this one (a partial listing: nothing is retired).
    """
    logger = get_run_logger()
    settings = load_settings()
    chosen = prefixes or [settings.images_prefix]
    artifact = ScoreProgressArtifact(f"scoring {', '.join(chosen)} ({mode})")
    on_progress = _progress_reporter(artifact)
    # One run per prefix at a time, however it was started (schedule, UI, CLI, nightly), held
    # until the last shard has finished wherever it ran.
    with (
        opened_workspace() as workspace,
        holding_locks(
            workspace,
            scoring_lock_names(workspace, chosen),
            purpose="a scoring run (mlc-score)",
            on_wait=logger.info,
        ),
    ):
        plan = plan_task(chosen, mode, batch_size, discover, force_retire, since)
        logger.info(
            "%d images to score with %s in %d shard(s) on the %s task runner",
            plan.report.pending,
            plan.report.model_version,
            len(plan.shards),
            settings.orchestration.task_runner,
        )
        tally = ShardTally(plan.report)
        failures = _run_shards(plan, settings.orchestration, tally, on_progress)
    report = tally.report()
    if failures:
        logger.error(
            "%d of %d shards failed (%d images scored by the others); first error: %s",
            len(failures),
            len(plan.shards),
            report.scored,
            failures[0],
        )
        raise failures[0]
    artifact.finish()
    publish_score_summary(report)
    _log_summary(report)
    return report


def _progress_reporter(artifact: ScoreProgressArtifact) -> Callable[[ScoreProgress], None]:
    """Progress to the log, the caller's progress bar and the artifact, from any thread."""
    logger = get_run_logger()
    relay = ProgressRelay(
        "score",
        lambda p: logger.info(
            "scored %d/%d images (%d failed), %.1f images/s",
            p.done,
            p.total,
            p.failed,
            p.images_per_second,
        ),
    )
    # Shard threads and the flow's own thread both report.
    reporting = threading.Lock()

    def on_progress(event: ScoreProgress) -> None:
        with reporting:
            relay(event)
            artifact(event)

    return on_progress


def _log_summary(report: ScoreReport) -> None:
    logger = get_run_logger()
    for warning in report.warnings:
        logger.warning("%s", warning)
    if report.dead_runs_ended:
        logger.warning(
            "took over the images of scoring runs %s, which stopped without finishing",
            report.dead_runs_ended,
        )
    logger.info(
        "listed %d objects, %d new images, scored %d, failed %d %s, skipped %s with model %s "
        "in %d shard(s) (%.1f images/s)",
        report.listed,
        report.new,
        report.scored,
        report.failed,
        report.failed_by_reason or "",
        report.skipped or "none",
        report.model_version,
        len(report.run_ids),
        report.images_per_second,
    )
