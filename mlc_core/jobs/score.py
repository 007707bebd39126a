"""Score images in the store with the champion model and write probabilities and tag sets.

A scoring run has two phases:
1. Discovery registers the image objects under the prefixes (see
   :mod:`mlc_core.jobs.scoring_plan`).
2. Scoring claims the registered images that need a score under the chosen mode a batch at a
   time, reads and decodes them in a thread pool, runs the model on fixed-size batches, and
   commits each batch's probabilities, tags, failures and released claims in one transaction
   from a writer thread. Claiming, reading, decoding, inference and writing overlap, and memory
   is bounded by a few batches in flight.

:func:`score_images` does both in one run. At scale the phases come apart: a plan
(:func:`~mlc_core.jobs.scoring_plan.plan_scoring`) discovers once and splits the pending images
into shards of image ids, and :func:`score_shard` scores one shard as a run of its own, on
whichever machine an orchestrator sends it to. The model is loaded once per process
(:mod:`mlc_core.jobs.predictors`), not once per shard.

Claims (see :mod:`mlc_core.db.work`) keep concurrent runs and shards from scoring an image
twice; a heartbeat thread keeps a run's claims alive, and the claims of a run killed mid-way are
taken over once its heartbeat is older than the lease. A corrupt image is recorded with its
reason and never stops the run; an unreachable store or database stops it, leaving every
committed batch whole and nothing partial.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from mlc_core.db.engine import database_failure, display_url
from mlc_core.db.model_versions import get_champion
from mlc_core.db.models import ModelVersion, Run
from mlc_core.db.runs import finish_run, start_run
from mlc_core.db.work import (
    SCORE_MODES,
    ScoreMode,
    ScoringScope,
    count_pending_images,
    end_dead_runs,
    release_run_claims,
)
from mlc_core.errors import MlcError, NoChampionModel, describe_error
from mlc_core.jobs.predictors import cached_predictor
from mlc_core.jobs.scoring_plan import (
    NOT_AN_IMAGE_TYPE,
    ScoringPlan,
    ScoringShard,
    discover_images,
    plan_scoring,
)
from mlc_core.jobs.scoring_reports import ScoreProgress, ScoreReport, ShardTally
from mlc_core.jobs.scoring_threads import (
    BATCHES_IN_FLIGHT,
    BatchResult,
    BatchWriter,
    Feeder,
    Heartbeat,
    RunContext,
)
from mlc_core.jobs.workspace import Workspace
from mlc_core.labels import LabelVocabulary
from mlc_core.storage import validate_prefix

__all__ = [
    "BATCHES_IN_FLIGHT",
    "NOT_AN_IMAGE_TYPE",
    "SCORE_MODES",
    "ScoreMode",
    "ScoreProgress",
    "ScoreReport",
    "ScoringPlan",
    "ScoringShard",
    "ShardTally",
    "discover_images",
    "plan_scoring",
    "score_images",
    "score_shard",
]

logger = logging.getLogger(__name__)


def _reason_kind(reason: str) -> str:
    """A short bucket for counting failures ("truncated or corrupt JPEG", "empty file", ...)."""
    return reason.split(":", 1)[0].strip()[:60]


def score_images(
    workspace: Workspace,
    *,
    prefixes: Sequence[str] | None = None,
    mode: ScoreMode = "new",
    batch_size: int | None = None,
    on_progress: Callable[[ScoreProgress], None] | None = None,
) -> ScoreReport:
    """Discover and score images under ``prefixes`` with the champion model, in one run.

    Safe to run again at any time and next to other runs: every image ends with one score row
    per model version, no image is scored by two runs at once, and a run killed at any moment
    leaves only whole batches behind.

    Args:
        workspace: the store to read images from and the database to write to.
        prefixes: key prefixes to score; default the images prefix from the settings.
        mode: ``new`` (no score from the champion yet), ``stale`` (scored only by older
            versions), ``all`` (every image, replacing the champion's earlier rows) or
            ``failed`` (retry images that failed to decode).
        batch_size: images per inference batch and per database transaction.
        on_progress: called after each batch is handed to the writer.

    Returns:
        The run's counts: listed, new, scored, failed by reason, skipped, throughput.

    Raises:
        NoChampionModel: no model has been trained yet.
        ValueError: an unknown mode.
        InvalidKey: a bad prefix.
        StorageError: the store failed (listing or reading); committed batches stay.
        DatabaseError: the database failed; committed batches stay.
    """
    if mode not in SCORE_MODES:
        raise ValueError(f"unknown scoring mode {mode!r}; expected one of {', '.join(SCORE_MODES)}")
    settings = workspace.settings
    chosen = [validate_prefix(p) for p in (prefixes or [settings.images_prefix])]

    def champion(session: Session) -> ModelVersion:
        found = get_champion(session)
        if found is None:
            raise NoChampionModel()
        return found

    return _scoring_run(
        workspace,
        find_model=champion,
        mode=mode,
        prefixes=chosen,
        batch_size=batch_size or settings.scoring.batch_size,
        on_progress=on_progress,
    )


def score_shard(
    workspace: Workspace,
    shard: ScoringShard,
    *,
    on_progress: Callable[[ScoreProgress], None] | None = None,
) -> ScoreReport:
    """Score the pending images of one shard of a plan, as a run of its own.

    The run claims, heartbeats and releases like any scoring run, so shards of one plan on
    several machines, and other runs, never score an image twice, and the images of a shard
    whose process died are taken over by the next run (or a retry of the shard) once its lease
    has run out. The model is loaded once per process, however many shards it scores.

    Args:
        workspace: opened from this process's settings; its store and database must be the
            plan's.
        shard: what to score (see :func:`~mlc_core.jobs.scoring_plan.plan_scoring`).
        on_progress: called after each batch is handed to the writer.

    Returns:
        The shard run's counts (discovery's counts are the plan's, not repeated here).

    Raises:
        MlcError: this process's store or database is not the one the plan was made in.
        StorageError: the store failed; committed batches stay.
        DatabaseError: the database failed; committed batches stay.
    """
    if workspace.store.root_uri != shard.store_uri:
        raise MlcError(
            f"shard {shard.index} is of images in {shard.store_uri} but this process's store "
            f"is {workspace.store.root_uri}; give every worker the MLC_STORAGE_URL of the flow"
        )

    def planned_model(session: Session) -> ModelVersion:
        found = session.get(ModelVersion, shard.model_version_id)
        if found is None or found.version != shard.model_version:
            raise MlcError(
                f"shard {shard.index} is to be scored with model {shard.model_version} (id "
                f"{shard.model_version_id}), which the database at "
                f"{display_url(workspace.engine)} does not have; give every worker the "
                "MLC_DATABASE_URL of the flow"
            )
        return found

    return _scoring_run(
        workspace,
        find_model=planned_model,
        mode=shard.mode,
        prefixes=list(shard.prefixes),
        batch_size=shard.batch_size,
        on_progress=on_progress,
        shard=shard,
    )


def _scoring_run(
    workspace: Workspace,
    *,
    find_model: Callable[[Session], ModelVersion],
    mode: ScoreMode,
    prefixes: list[str],
    batch_size: int,
    on_progress: Callable[[ScoreProgress], None] | None,
    shard: ScoringShard | None = None,
) -> ScoreReport:
    """One row in ``runs``: find the model, then discover and score the prefixes' pending
    images, or (given a ``shard``) score the shard's, which its plan discovered."""
    settings = workspace.settings
    started = time.monotonic()
    parameters: dict[str, Any] = {
        "mode": mode,
        "prefixes": prefixes,
        "batch_size": batch_size,
        # Where the run works, for an operator tracing a shard or a dead run to a machine.
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    if shard is not None:
        parameters["shard"] = shard.index
        parameters["image_ids"] = [shard.first_image_id, shard.last_image_id]
    try:
        with workspace.transaction() as session:
            champion = find_model(session)
            session.expunge(champion)
            run = start_run(session, "score", parameters)
            run.heartbeat_at = run.started_at
            run_id, run_started = run.id, run.started_at
    except DBAPIError as error:
        raise database_failure(workspace.engine, error) from error
    report = ScoreReport(
        model_version=champion.version,
        mode=mode,
        prefixes=prefixes,
        run_id=run_id,
        run_ids=[run_id],
    )
    since: datetime = run_started if shard is None else shard.since
    scope = ScoringScope(
        model_version_id=champion.id,
        mode=mode,
        uri_prefixes=tuple(workspace.store.root_uri + prefix for prefix in prefixes),
        since=since,
        first_image_id=None if shard is None else shard.first_image_id,
        last_image_id=None if shard is None else shard.last_image_id,
    )
    context = RunContext(workspace, scope, run_id, settings.scoring.claim_lease_seconds)
    heartbeat = Heartbeat(context)
    try:
        discover = prefixes if shard is None else []
        _score(context, champion, report, discover, batch_size, on_progress)
        if heartbeat.lost:
            raise context.abandoned()
    except BaseException as error:
        heartbeat.stop()
        report.seconds = time.monotonic() - started
        failure = (
            database_failure(workspace.engine, error) if isinstance(error, DBAPIError) else error
        )
        _finish(context, report, champion.id, failure)
        if failure is not error:
            raise failure from error
        raise
    heartbeat.stop()
    report.seconds = time.monotonic() - started
    _finish(context, report, champion.id, None)
    logger.info(
        "run %d scored %d images (%d failed, %d new) with %s in %.1f s",
        run_id,
        report.scored,
        report.failed,
        report.new,
        champion.version,
        report.seconds,
    )
    return report


def _finish(
    context: RunContext,
    report: ScoreReport,
    model_version_id: int,
    error: BaseException | None,
) -> None:
    """Record the run's end and drop its claims; never hides the error that ended it."""
    try:
        with context.workspace.transaction() as session:
            release_run_claims(session, context.run_id)
            finish_run(
                session,
                session.get_one(Run, context.run_id),
                status="failed" if error else "succeeded",
                counts=report.as_dict(),
                error=None if error is None else describe_error(error),
                model_version_id=model_version_id,
            )
    except Exception as finish_error:
        if error is None:
            if isinstance(finish_error, DBAPIError):
                raise database_failure(context.workspace.engine, finish_error) from finish_error
            raise
        # The run already failed (most likely the same database outage); its claims expire
        # with the lease, and the original error is the one worth showing.
        logger.warning("could not record the end of run %d: %s", context.run_id, finish_error)


def _score(
    context: RunContext,
    champion: ModelVersion,
    report: ScoreReport,
    discover_prefixes: list[str],
    batch_size: int,
    on_progress: Callable[[ScoreProgress], None] | None,
) -> None:
    workspace = context.workspace
    discover_images(workspace, discover_prefixes, report)
    with workspace.transaction() as session:
        report.dead_runs_ended.extend(end_dead_runs(session, live_after=context.live_after()))
        report.pending = count_pending_images(session, context.scope)
    if report.pending == 0:
        return

    predictor = cached_predictor(workspace.store, champion, batch_size)
    vocabulary = LabelVocabulary(tuple(champion.classes))
    failures_by_reason: Counter[str] = Counter()
    scoring_started = time.monotonic()
    done = 0

    writer = BatchWriter(context, vocabulary, replace=(context.scope.mode == "all"))
    pool = ThreadPoolExecutor(
        max_workers=workspace.settings.scoring.read_workers, thread_name_prefix="mlc-read"
    )
    feeder = Feeder(context, pool, batch_size, champion.image_size)
    failed = True
    try:
        # Traced while the first batches are read, so the first real batch runs at full speed.
        predictor.predict(np.zeros((1, champion.image_size, champion.image_size, 3), np.uint8))
        for batch in feeder:
            items = [future.result() for future in batch.futures]
            good = [item for item in items if item.pixels is not None]
            probabilities: list[tuple[int, list[float]]] = []
            if good:
                inference_started = time.monotonic()
                rows = predictor.predict(np.stack([item.pixels for item in good]))  # type: ignore[misc]
                report.inference_seconds += time.monotonic() - inference_started
                # Rounded before tags are chosen, so `mlc retag` on the stored values gives
                # exactly the tags written here.
                probabilities = [
                    (item.image_id, [round(float(p), 6) for p in row])
                    for item, row in zip(good, rows, strict=True)
                ]
            failures = [(item.image_id, item.failure) for item in items if item.failure]
            writer.submit(BatchResult(batch.image_ids, probabilities, failures))
            for _, reason in failures:
                failures_by_reason[_reason_kind(reason)] += 1
            for item in items:
                if item.skipped:
                    report.skip(item.skipped)
            report.scored += len(probabilities)
            report.failed += len(failures)
            done += len(items)
            if on_progress is not None:
                on_progress(
                    ScoreProgress(
                        done=done,
                        total=report.pending,
                        scored=report.scored,
                        failed=report.failed,
                        seconds=time.monotonic() - scoring_started,
                    )
                )
        failed = False
    finally:
        feeder.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        report.failed_by_reason = dict(failures_by_reason)
        try:
            writer.close()
        except BaseException:
            if not failed:
                raise
            logger.warning("the writer failed too while the run was stopping", exc_info=True)
        report.held_by_other_runs = feeder.held_by_other_runs
        report.dead_runs_ended.extend(feeder.dead_runs_ended)
        report.scoring_seconds = time.monotonic() - scoring_started
