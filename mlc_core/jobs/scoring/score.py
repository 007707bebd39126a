"""Score images in the store with the champion model: one run of the scoring pipeline.

:func:`score_images` discovers and scores in one run. At scale the two come apart: a plan
(:func:`~mlc_core.jobs.scoring.plan.plan_scoring`) discovers once and splits the pending images
into shards of image ids, and :func:`score_shard` scores one shard as a run of its own, on
whichever machine an orchestrator sends it to. The model is loaded once per process
(:mod:`mlc_core.jobs.scoring.model_cache`), not once per shard.

Claims keep concurrent runs and shards from scoring an image twice; a heartbeat thread keeps a
run's claims alive, and the claims of a run killed mid-way are taken over once its heartbeat
is older than the lease. A corrupt image is recorded with its reason and never stops the run;
an unreachable store or database stops it, leaving every committed batch whole and nothing
partial.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from sqlalchemy.exc import DBAPIError

from mlc_core.db.engine import database_failure, display_url
from mlc_core.db.model_versions import require_champion
from mlc_core.db.models import ModelVersion
from mlc_core.db.pending import ScoreMode, ScoringScope, check_score_mode, count_pending_images
from mlc_core.db.runs import end_dead_runs, live_after
from mlc_core.errors import MlcError
from mlc_core.jobs.scoring.discovery import discover_images
from mlc_core.jobs.scoring.drift import basis_for_drift
from mlc_core.jobs.scoring.pipeline import score_pending
from mlc_core.jobs.scoring.plan import ScoringShard
from mlc_core.jobs.scoring.reports import ScoreProgress, ScoreReport
from mlc_core.jobs.scoring.run import (
    Heartbeat,
    RunContext,
    finish_scoring_run,
    start_scoring_run,
)
from mlc_core.jobs.workspace import Workspace
from mlc_core.storage import validate_prefix

logger = logging.getLogger(__name__)


def score_images(
    workspace: Workspace,
    *,
    prefixes: Sequence[str] | None = None,
    mode: str = "new",
    batch_size: int | None = None,
    on_progress: Callable[[ScoreProgress], None] | None = None,
    discover: bool = True,
    force_retire: bool = False,
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
        batch_size: images per claim and per database transaction (the model scores them in
            forward passes of ``MLC_SCORING__INFERENCE_BATCH_SIZE``).
        on_progress: called after each batch is handed to the writer.
        discover: list the store first; False scores the registered images only (after a
            promotion, say).
        force_retire: retire what a complete listing did not show, even beyond
            ``MLC_SCORING__MAX_RETIRE_FRACTION`` of a prefix.

    Returns:
        The run's counts: listed, new, scored, failed by reason, skipped, retired, throughput.

    Raises:
        NoChampionModel: no model has been trained yet.
        ValueError: an unknown mode.
        InvalidKey: a bad prefix.
        StorageError: the store failed (listing or reading); committed batches stay.
        DatabaseError: the database failed; committed batches stay.
    """
    checked_mode = check_score_mode(mode)
    settings = workspace.settings
    chosen = [validate_prefix(p) for p in (prefixes or [settings.images_prefix])]
    with workspace.transaction() as session:
        champion = require_champion(session)
        session.expunge(champion)
    return _scoring_run(
        workspace,
        champion,
        mode=checked_mode,
        prefixes=chosen,
        batch_size=batch_size or settings.scoring.batch_size,
        on_progress=on_progress,
        discovery=(discover, force_retire),
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
        shard: what to score (see :func:`~mlc_core.jobs.scoring.plan.plan_scoring`).
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
    with workspace.transaction() as session:
        model = session.get(ModelVersion, shard.model_version_id)
        if model is None or model.version != shard.model_version:
            raise MlcError(
                f"shard {shard.index} is to be scored with model {shard.model_version} (id "
                f"{shard.model_version_id}), which the database at "
                f"{display_url(workspace.engine)} does not have; give every worker the "
                "MLC_DATABASE_URL of the flow"
            )
        session.expunge(model)
    return _scoring_run(
        workspace,
        model,
        mode=shard.mode,
        prefixes=list(shard.prefixes),
        batch_size=shard.batch_size,
        on_progress=on_progress,
        shard=shard,
    )


def _scoring_run(
    workspace: Workspace,
    model: ModelVersion,
    *,
    mode: ScoreMode,
    prefixes: list[str],
    batch_size: int,
    on_progress: Callable[[ScoreProgress], None] | None,
    shard: ScoringShard | None = None,
    discovery: tuple[bool, bool] = (False, False),
) -> ScoreReport:
    """One row in ``runs``: discover (``discovery``: whether, and whether to force retiring)
    and score the prefixes' pending images, or (given a ``shard``) score the shard's, which
    its plan discovered."""
    started = time.monotonic()
    extra = {} if shard is None else {"shard": shard.index, "image_ids": shard.id_range}
    run_id, run_started = start_scoring_run(
        workspace, mode=mode, prefixes=prefixes, batch_size=batch_size, **extra
    )
    report = ScoreReport(
        model_version=model.version,
        mode=mode,
        prefixes=prefixes,
        run_id=run_id,
        run_ids=[run_id],
        drift_basis=basis_for_drift(workspace, model),
    )
    scope = ScoringScope(
        model_version_id=model.id,
        mode=mode,
        uri_prefixes=tuple(workspace.store.root_uri + prefix for prefix in prefixes),
        since=run_started if shard is None else shard.since,
        first_image_id=None if shard is None else shard.first_image_id,
        last_image_id=None if shard is None else shard.last_image_id,
    )
    context = RunContext(workspace, scope, run_id)
    heartbeat = Heartbeat(context)
    try:
        if discovery[0]:
            discover_images(workspace, prefixes, report, force_retire=discovery[1])
        _score(context, model, report, batch_size, on_progress)
        if heartbeat.lost:
            raise context.abandoned()
    except BaseException as error:
        heartbeat.stop()
        report.seconds = time.monotonic() - started
        failure = (
            database_failure(workspace.engine, error) if isinstance(error, DBAPIError) else error
        )
        finish_scoring_run(context, report, failure)
        if failure is not error:
            raise failure from error
        raise
    heartbeat.stop()
    report.seconds = time.monotonic() - started
    finish_scoring_run(context, report, None)
    logger.info(
        "run %d scored %d images (%d failed, %d new) with %s in %.1f s",
        run_id,
        report.scored,
        report.failed,
        report.new,
        model.version,
        report.seconds,
    )
    return report


def _score(
    context: RunContext,
    model: ModelVersion,
    report: ScoreReport,
    batch_size: int,
    on_progress: Callable[[ScoreProgress], None] | None,
) -> None:
    with context.workspace.transaction() as session:
        dead = end_dead_runs(session, live_after=live_after(session, context.lease))
        report.dead_runs_ended.extend(dead)
        report.pending = count_pending_images(session, context.scope)
    if report.pending:
        score_pending(context, model, report, batch_size, on_progress)
