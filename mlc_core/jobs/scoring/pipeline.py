"""The scoring pipeline: claim -> read -> decode -> infer -> write, in overlapping threads.

- :class:`~mlc_core.jobs.scoring.feeder.Feeder` claims batches and reads and decodes their
  images in a pool of reader threads, a few batches ahead.
- :func:`score_pending` (the scoring thread) takes the batches in order, runs the model on
  each and hands the results to the writer.
- :class:`~mlc_core.jobs.scoring.writer.BatchWriter` applies the thresholds and commits each
  batch's scores, tags, failures, retired images and released claims in one transaction.

Any thread that fails sets the run's ``stopping`` flag; the others wind down and the scoring
thread re-raises the first error. A run whose batches stop finishing (a hung read) ends itself
once the lease has passed without progress (see :class:`~mlc_core.jobs.scoring.run.Heartbeat`).
Memory is bounded by the batches in flight, whatever the number of images. One image's
probabilities travel as one :class:`~mlc_core.db.scores.ImageScore` from the model to the row.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING

import numpy as np

from mlc_core.db.models import ModelVersion
from mlc_core.db.scores import ImageScore
from mlc_core.jobs.scoring.feeder import Feeder, LoadedImage, ReadPool
from mlc_core.jobs.scoring.model_cache import scoring_predictor
from mlc_core.jobs.scoring.reports import ScoreProgress, ScoreReport, reason_kind
from mlc_core.jobs.scoring.run import RunContext
from mlc_core.jobs.scoring.writer import BatchResult, BatchWriter
from mlc_core.labels import LabelVocabulary

if TYPE_CHECKING:
    from mlc_core.model.predict import Predictor

logger = logging.getLogger(__name__)


def score_pending(
    context: RunContext,
    champion: ModelVersion,
    report: ScoreReport,
    batch_size: int,
    on_progress: Callable[[ScoreProgress], None] | None,
) -> None:
    """Score every pending image of the run's scope, counting into ``report``.

    Returns when every image of the scope is done (scored, failed, or scored by another run),
    or raises the first error of any stage once the others have wound down.
    """
    scoring = context.workspace.settings.scoring
    predictor = scoring_predictor(context.workspace.store, champion, scoring, batch_size)
    failures_by_reason: Counter[str] = Counter()
    started = time.monotonic()
    writer = BatchWriter(
        context, LabelVocabulary(tuple(champion.classes)), replace=context.scope.mode == "all"
    )
    pool = ReadPool(scoring.read_workers)
    feeder = Feeder(context, pool, batch_size, champion.image_size)
    failed = True
    try:
        # Traced while the first batches are read, so the first real batch runs at full speed.
        predictor.predict(np.zeros((1, champion.image_size, champion.image_size, 3), np.uint8))
        # The model is loaded and traced: from here on, batches must keep moving.
        context.start_watching()
        done = 0
        for batch in feeder:
            items = [_wait_for(context, future) for future in batch.futures]
            result = _infer(predictor, items, report)
            context.made_progress()
            writer.submit(result)
            _count(report, items, result, failures_by_reason)
            _count_tags(report, result.scores, champion)
            done += len(items)
            if on_progress is not None:
                on_progress(
                    ScoreProgress(
                        done=done,
                        total=report.pending,
                        scored=report.scored,
                        failed=report.failed,
                        seconds=time.monotonic() - started,
                    )
                )
        if context.stall is not None:
            raise context.stall
        failed = False
    finally:
        feeder.stop()
        # A read that hangs is left behind in its daemon thread rather than waited for.
        pool.shutdown(wait=context.stall is None)
        _close_writer(writer, failed)
        failures_by_reason["crashed the scorer"] += feeder.given_up
        report.failed += feeder.given_up
        report.failed_by_reason = {k: n for k, n in failures_by_reason.items() if n}
        report.held_by_other_runs = feeder.held_by_other_runs
        report.left_to_other_runs = feeder.left_to_other_runs
        report.dead_runs_ended.extend(feeder.dead_runs_ended)
        report.scoring_seconds = time.monotonic() - started


def _wait_for(context: RunContext, future: Future[LoadedImage]) -> LoadedImage:
    """The read's result; raises the run's stall instead of waiting on a hung read forever."""
    while True:
        try:
            return future.result(timeout=context.poll_seconds)
        except FutureTimeout:
            if context.stall is not None:
                raise context.stall from None


def _infer(predictor: Predictor, items: list[LoadedImage], report: ScoreReport) -> BatchResult:
    good = [item for item in items if item.pixels is not None]
    scores: list[ImageScore] = []
    if good:
        started = time.monotonic()
        rows = predictor.predict(np.stack([item.pixels for item in good]))  # type: ignore[misc]
        report.inference_seconds += time.monotonic() - started
        # Rounded before tags are chosen, so `mlc retag` on the stored values gives exactly
        # the tags written here.
        scores = [
            ImageScore(item.image_id, tuple(round(float(p), 6) for p in row))
            for item, row in zip(good, rows, strict=True)
        ]
    failures = [(item.image_id, item.failure) for item in items if item.failure]
    retired = [item.image_id for item in items if item.retired]
    return BatchResult([item.image_id for item in items], scores, failures, retired)


def _count(
    report: ScoreReport,
    items: list[LoadedImage],
    result: BatchResult,
    failures_by_reason: Counter[str],
) -> None:
    for _, reason in result.failures:
        failures_by_reason[reason_kind(reason)] += 1
    for item in items:
        if item.skipped:
            report.skip(item.skipped)
    report.retired += len(result.retired)
    report.scored += len(result.scores)
    report.failed += len(result.failures)


def _count_tags(report: ScoreReport, scores: list[ImageScore], model: ModelVersion) -> None:
    """Add how many of the scored images reach each class's threshold (for drift)."""
    if not scores:
        return
    tagged = (np.array([s.probabilities for s in scores]) >= np.array(model.thresholds)).sum(0)
    for name, count in zip(model.classes, tagged.tolist(), strict=True):
        report.tagged_by_class[name] = report.tagged_by_class.get(name, 0) + int(count)


def _close_writer(writer: BatchWriter, failed: bool) -> None:
    try:
        writer.close()
    except BaseException:
        if not failed:
            raise
        logger.warning("the writer failed too while the run was stopping", exc_info=True)
