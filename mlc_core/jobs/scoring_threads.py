"""The threads of one scoring run, and what they hand each other.

- :class:`Feeder` claims the next batch (see :func:`mlc_core.db.work.claim_images`), submits
  its reads and decodes to a thread pool, and queues the batch for inference, staying at most
  ``BATCHES_IN_FLIGHT`` batches ahead.
- The scoring thread (in :mod:`mlc_core.jobs.score`) takes the batches in order, runs the model
  and hands the results to :class:`BatchWriter`.
- :class:`BatchWriter` commits each batch's scores, tags, failures and released claims in one
  transaction.
- :class:`Heartbeat` keeps ``runs.heartbeat_at`` fresh so other runs leave the claims alone.

Any thread that fails sets the run's ``stopping`` flag; the others wind down and the scoring
thread re-raises the first error.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from mlc_core.db.models import utc_now
from mlc_core.db.queries import ScoreRecord, record_failures, write_scores
from mlc_core.db.tag_sets import current_thresholds, delete_scores
from mlc_core.db.work import (
    ScoringScope,
    claim_images,
    end_dead_runs,
    images_held_by_other_runs,
    record_heartbeat,
    release_claims,
)
from mlc_core.errors import ImageDecodeError, MlcError, ObjectNotFound
from mlc_core.images import decode_image
from mlc_core.jobs.workspace import Workspace
from mlc_core.labels import LabelVocabulary
from mlc_core.storage import key_for_uri

logger = logging.getLogger(__name__)

# Batches claimed and being read ahead of inference: enough to keep the model busy, few enough
# to bound memory (decoded pixels of about this many batches, whatever the number of images).
BATCHES_IN_FLIGHT = 3
DELETED_REASON = "deleted_before_read"
OUTSIDE_STORE = "outside_the_store"
# How often a waiting thread looks again, at most.
_POLL_SECONDS = 1.0


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
    """What the writer commits for one batch."""

    image_ids: list[int]
    probabilities: list[tuple[int, list[float]]]
    failures: list[tuple[int, str]]


class RunContext:
    """What the threads of one run share: the workspace, the run, the lease and a stop flag."""

    def __init__(
        self, workspace: Workspace, scope: ScoringScope, run_id: int, lease_seconds: float
    ) -> None:
        self.workspace = workspace
        self.scope = scope
        self.run_id = run_id
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_seconds = min(_POLL_SECONDS, lease_seconds / 4)
        self.stopping = threading.Event()

    def live_after(self) -> datetime:
        return utc_now() - self.lease

    def abandoned(self) -> MlcError:
        return MlcError(
            f"scoring run {self.run_id} was ended by another run after more than "
            f"{self.lease.total_seconds():g} s without a heartbeat, which may have taken over "
            "its images; stopping it (raise MLC_SCORING__CLAIM_LEASE_SECONDS if the database "
            "is that slow)"
        )


class Heartbeat:
    """Refreshes the run's heartbeat from a background thread until stopped."""

    def __init__(self, context: RunContext) -> None:
        self._context = context
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._run, name="mlc-score-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Four beats per lease: a run is only declared dead after missing all of them.
        interval = self._context.lease.total_seconds() / 4
        while not self._stop.wait(interval):
            try:
                with self._context.workspace.transaction() as session:
                    alive = record_heartbeat(session, self._context.run_id)
            except Exception as error:  # the writer and feeder report database failures
                logger.warning(
                    "could not record the heartbeat of run %d: %s", self._context.run_id, error
                )
                continue
            if not alive:
                self.lost = True
                self._context.stopping.set()
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


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
                ScoreRecord(
                    image_id=image_id,
                    probabilities=probabilities,
                    tags=self._vocabulary.tags_from_probabilities(
                        probabilities, thresholds, top_class_fallback=fallback
                    ),
                )
                for image_id, probabilities in result.probabilities
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
    """Claims batches and starts their reads from a background thread.

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
