"""The scoring pipeline: claim -> read -> decode -> infer -> write, in overlapping threads.

- :class:`Feeder` claims the next batch (see :func:`mlc_core.db.claims.claim_images`), submits
  its reads and decodes to a thread pool, and queues the batch for inference, staying at most
  ``BATCHES_IN_FLIGHT`` batches ahead.
- :func:`score_pending` (the scoring thread) takes the batches in order, runs the model on
  each and hands the results to :class:`BatchWriter`.
- :class:`BatchWriter` applies the thresholds and commits each batch's scores, tags, failures
  and released claims in one transaction.

Any thread that fails sets the run's ``stopping`` flag; the others wind down and the scoring
thread re-raises the first error. Memory is bounded by the batches in flight, whatever the
number of images. One image's probabilities travel as one :class:`~mlc_core.db.scores.ImageScore`
from the model to the row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mlc_core.db.claims import claim_images, images_held_by_other_runs, release_claims
from mlc_core.db.images import record_failures
from mlc_core.db.models import ModelVersion
from mlc_core.db.runs import end_dead_runs, record_heartbeat
from mlc_core.db.scores import ImageScore, current_thresholds, delete_scores, write_scores
from mlc_core.errors import ImageDecodeError, ObjectNotFound
from mlc_core.images import decode_image
from mlc_core.jobs.scoring.model_cache import cached_predictor
from mlc_core.jobs.scoring.reports import ScoreProgress, ScoreReport, reason_kind
from mlc_core.jobs.scoring.run import RunContext
from mlc_core.labels import LabelVocabulary
from mlc_core.storage import key_for_uri

if TYPE_CHECKING:
    from mlc_core.model.predict import Predictor

logger = logging.getLogger(__name__)

# Batches claimed and being read ahead of inference: enough to keep the model busy, few enough
# to bound memory (decoded pixels of about this many batches, whatever the number of images).
BATCHES_IN_FLIGHT = 3
DELETED_REASON = "deleted_before_read"
OUTSIDE_STORE = "outside_the_store"


@dataclass
class LoadedImage:
    """One claimed image after its read and decode: pixels, a failure, or why it was skipped."""

    image_id: int
    key: str | None
    pixels: np.ndarray | None = None
    failure: str | None = None
    skipped: str | None = None


@dataclass
class ClaimedReads:
    """One claimed batch: the futures of its reads, in claim order."""

    image_ids: list[int]
    futures: list[Future[LoadedImage]]


@dataclass
class BatchResult:
    """What the writer commits for one batch: every claimed image is in ``image_ids``."""

    image_ids: list[int]
    scores: list[ImageScore]
    failures: list[tuple[int, str]]


class BatchWriter:
    """Commits batches from a background thread so inference never waits on the database."""

    def __init__(self, context: RunContext, vocabulary: LabelVocabulary, replace: bool) -> None:
        self._context = context
        self._vocabulary = vocabulary
        self._replace = replace
        self._queue: queue.Queue[BatchResult | None] = queue.Queue(maxsize=BATCHES_IN_FLIGHT)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mlc-score-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (result := self._queue.get()) is not None:
            if self._error is not None:
                continue
            try:
                self._commit(result)
            except BaseException as error:  # re-raised in the scoring thread by check()
                self._error = error
                self._context.stopping.set()

    def _commit(self, result: BatchResult) -> None:
        context = self._context
        model_version_id = context.scope.model_version_id
        with context.workspace.transaction() as session:
            if not record_heartbeat(session, context.run_id):
                raise context.abandoned()
            # Read in this transaction: thresholds changed by `mlc thresholds` mid-run apply
            # from the next batch on, and `mlc retag` sees every batch committed before it.
            thresholds = current_thresholds(session, model_version_id)
            fallback = context.workspace.settings.scoring.top_class_fallback
            scores = [
                dataclasses.replace(
                    score,
                    tags=tuple(
                        self._vocabulary.tags_from_probabilities(
                            score.probabilities, thresholds, top_class_fallback=fallback
                        )
                    ),
                )
                for score in result.scores
            ]
            if self._replace:
                delete_scores(
                    session,
                    model_version_id=model_version_id,
                    image_ids=[row.image_id for row in scores],
                )
            write_scores(session, model_version_id, context.run_id, scores)
            record_failures(session, result.failures)
            release_claims(
                session,
                run_id=context.run_id,
                model_version_id=model_version_id,
                image_ids=result.image_ids,
            )

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, result: BatchResult) -> None:
        self.check()
        self._queue.put(result)

    def close(self) -> None:
        """Commit what was submitted, stop the thread, and raise its error if it had one."""
        self._queue.put(None)
        self._thread.join()
        self.check()


class Feeder:
    """Claims batches and starts their reads and decodes from a background thread.

    At most ``BATCHES_IN_FLIGHT`` batches wait for inference; the thread blocks until the
    scoring thread takes one. When no unclaimed pending image is left, it waits for the images
    other live runs hold: they either get scored (and drop out) or their run dies and this run
    takes them over, so a run ends only when every image of its scope is done.
    """

    def __init__(
        self,
        context: RunContext,
        pool: ThreadPoolExecutor,
        batch_size: int,
        image_size: int,
    ) -> None:
        self._context = context
        self._pool = pool
        self._batch_size = batch_size
        self._image_size = image_size
        self.held_by_other_runs = 0
        self.dead_runs_ended: list[int] = []
        self._queue: queue.Queue[ClaimedReads | None] = queue.Queue(maxsize=BATCHES_IN_FLIGHT)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mlc-score-feeder", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[ClaimedReads]:
        while True:
            batch = self._queue.get()
            if batch is None:
                if self._error is not None:
                    raise self._error
                return
            yield batch

    def stop(self) -> None:
        self._context.stopping.set()
        # Unblock a put() waiting for room, then let the thread see the flag.
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()

    def _run(self) -> None:
        try:
            self._claim_all()
        except BaseException as error:
            self._error = error
        self._put(None)

    def _put(self, batch: ClaimedReads | None) -> bool:
        """Queue ``batch``, waiting for room; False when the run is stopping meanwhile."""
        while True:
            try:
                self._queue.put(batch, timeout=0.1)
                return True
            except queue.Full:
                if self._context.stopping.is_set():
                    return False

    def _claim(
        self, after_id: int, only_ids: Sequence[int] | None = None
    ) -> tuple[int | None, int]:
        """Claim one batch and start reading it.

        Returns:
            The next cursor (None at the end) and how many images were claimed.
        """
        context = self._context
        with context.workspace.transaction() as session:
            if not record_heartbeat(session, context.run_id):
                raise context.abandoned()
            batch = claim_images(
                session,
                context.scope,
                run_id=context.run_id,
                after_id=after_id,
                limit=self._batch_size,
                live_after=context.live_after(),
                only_ids=only_ids,
            )
        if batch.dead_runs_ended:
            logger.warning(
                "ended scoring runs %s, silent for longer than the lease", batch.dead_runs_ended
            )
            self.dead_runs_ended.extend(batch.dead_runs_ended)
        if batch.images:
            store = context.workspace.store
            items = [
                LoadedImage(image_id, key_for_uri(store, uri)) for image_id, uri in batch.images
            ]
            futures = [self._pool.submit(self._load, item) for item in items]
            if not self._put(ClaimedReads([item.image_id for item in items], futures)):
                return None, len(items)
        return batch.last_id, len(batch.images)

    def _claim_all(self) -> None:
        stopping = self._context.stopping
        cursor: int | None = 0
        while cursor is not None and not stopping.is_set():
            cursor, _ = self._claim(cursor)
        # Images other runs held when this pass went by: wait until they are scored (they
        # drop out) or their run is dead (claim_images takes them over).
        held = self._held_by_others()
        self.held_by_other_runs = len(held)
        while held and not stopping.is_set():
            claimed = 0
            cursor = 0
            while cursor is not None and not stopping.is_set():
                cursor, count = self._claim(cursor, only_ids=held)
                claimed += count
            if not claimed:
                stopping.wait(self._context.poll_seconds)
            held = self._held_by_others()

    def _held_by_others(self) -> list[int]:
        context = self._context
        with context.workspace.transaction() as session:
            # Held first: the images of the runs ended here are then retried, not forgotten.
            held = images_held_by_other_runs(session, context.scope, run_id=context.run_id)
            ended = end_dead_runs(session, live_after=context.live_after())
        if ended:
            logger.warning("ended scoring runs %s, silent for longer than the lease", ended)
            self.dead_runs_ended.extend(ended)
        return held

    def _load(self, item: LoadedImage) -> LoadedImage:
        workspace = self._context.workspace
        if item.key is None:
            item.skipped = OUTSIDE_STORE
            return item
        try:
            data = workspace.store.get(item.key)
        except ObjectNotFound:
            item.skipped = DELETED_REASON
            return item
        try:
            item.pixels = decode_image(
                data, self._image_size, max_pixels=workspace.settings.scoring.max_image_pixels
            )
        except ImageDecodeError as error:
            item.failure = error.reason
        return item


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
    predictor = cached_predictor(context.workspace.store, champion, batch_size)
    failures_by_reason: Counter[str] = Counter()
    started = time.monotonic()
    writer = BatchWriter(
        context, LabelVocabulary(tuple(champion.classes)), replace=context.scope.mode == "all"
    )
    pool = ThreadPoolExecutor(
        max_workers=context.workspace.settings.scoring.read_workers, thread_name_prefix="mlc-read"
    )
    feeder = Feeder(context, pool, batch_size, champion.image_size)
    failed = True
    try:
        # Traced while the first batches are read, so the first real batch runs at full speed.
        predictor.predict(np.zeros((1, champion.image_size, champion.image_size, 3), np.uint8))
        done = 0
        for batch in feeder:
            items = [future.result() for future in batch.futures]
            result = _infer(predictor, items, report)
            writer.submit(result)
            _count(report, items, result, failures_by_reason)
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
        failed = False
    finally:
        feeder.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        report.failed_by_reason = dict(failures_by_reason)
        _close_writer(writer, failed)
        report.held_by_other_runs = feeder.held_by_other_runs
        report.dead_runs_ended.extend(feeder.dead_runs_ended)
        report.scoring_seconds = time.monotonic() - started


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
    return BatchResult([item.image_id for item in items], scores, failures)


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
    report.scored += len(result.scores)
    report.failed += len(result.failures)


def _close_writer(writer: BatchWriter, failed: bool) -> None:
    try:
        writer.close()
    except BaseException:
        if not failed:
            raise
        logger.warning("the writer failed too while the run was stopping", exc_info=True)
