"""The pipeline's first stages: claim a batch, read and decode its images.

:class:`Feeder` claims the next batch (see :func:`mlc_core.db.claims.claim_images`), submits its
reads and decodes to a pool of reader threads, and queues the batch for inference, staying at
most ``BATCHES_IN_FLIGHT`` batches ahead. Each image is read as exactly the version that was
listed (its etag) and no larger than ``MLC_SCORING__MAX_OBJECT_BYTES``; what one object does
wrong (gone, rewritten, refused, too large, not an image) is that image's outcome, never the
run's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlc_core.db.claims import claim_images, images_held_by_other_runs
from mlc_core.db.runs import end_dead_runs, live_after, record_heartbeat
from mlc_core.errors import (
    ImageDecodeError,
    ObjectChanged,
    ObjectNotFound,
    ObjectTooLarge,
    ObjectUnreadable,
)
from mlc_core.images import decode_image
from mlc_core.jobs.scoring.run import RunContext
from mlc_core.storage import key_for_uri

logger = logging.getLogger(__name__)

# Batches claimed and being read ahead of inference: enough to keep the model busy, few enough
# to bound memory (decoded pixels of about this many batches, whatever the number of images).
BATCHES_IN_FLIGHT = 3
CHANGED_REASON = "changed_since_listing"
OUTSIDE_STORE = "outside_the_store"
# How many leases a run waits, without any of them finishing, for images other live runs hold.
WAIT_FOR_OTHERS_LEASES = 3


@dataclass
class LoadedImage:
    """One claimed image after its read and decode: pixels, a failure, or why it was skipped.

    ``retired`` says the object is gone from the store.
    """

    image_id: int
    key: str | None
    etag: str
    size: int
    pixels: np.ndarray | None = None
    failure: str | None = None
    skipped: str | None = None
    retired: bool = False


@dataclass
class ClaimedReads:
    """One claimed batch: the futures of its reads, in claim order."""

    image_ids: list[int]
    futures: list[Future[LoadedImage]]


class ReadPool:
    """Reader threads that a hung read cannot keep the process from exiting with.

    A thread stuck in a read (a hung file system, a server that never answers) cannot be
    interrupted; these threads are daemons, so a run that gave up on it still ends.
    """

    def __init__(self, workers: int) -> None:
        self._tasks: queue.Queue[tuple[Future[Any], Callable[[], Any]] | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._work, name=f"mlc-read-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, function: Callable[[], LoadedImage]) -> Future[LoadedImage]:
        future: Future[LoadedImage] = Future()
        self._tasks.put((future, function))
        return future

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            future, function = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function())
            except BaseException as error:
                future.set_exception(error)

    def shutdown(self, *, wait: bool) -> None:
        """Stop the threads once the queued reads are done (``wait``: wait for them)."""
        for _ in self._threads:
            self._tasks.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


class Feeder:
    """Claims batches and starts their reads and decodes from a background thread.

    At most ``BATCHES_IN_FLIGHT`` batches wait for inference; the thread blocks until the
    scoring thread takes one. When no unclaimed pending image is left, it waits for the images
    other live runs hold: they either get scored (and drop out) or their run dies and this run
    takes them over. It waits at most ``WAIT_FOR_OTHERS_LEASES`` leases without any of them
    finishing, then leaves them to their holders.
    """

    def __init__(
        self, context: RunContext, pool: ReadPool, batch_size: int, image_size: int
    ) -> None:
        self._context = context
        self._pool = pool
        self._batch_size = batch_size
        self._image_size = image_size
        self.held_by_other_runs = 0
        self.left_to_other_runs = 0
        self.dead_runs_ended: list[int] = []
        self.given_up = 0
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
                live_after=live_after(session, context.lease),
                only_ids=only_ids,
                max_abandoned_claims=context.workspace.settings.scoring.max_abandoned_claims,
            )
        context.made_progress()
        self._note_ended(batch.dead_runs_ended)
        self.given_up += len(batch.given_up)
        if batch.images:
            store = context.workspace.store
            items = [
                LoadedImage(image.id, key_for_uri(store, image.uri), image.etag, image.size)
                for image in batch.images
            ]
            futures = [self._pool.submit(functools.partial(self._load, item)) for item in items]
            if not self._put(ClaimedReads([item.image_id for item in items], futures)):
                return None, len(items)
        return batch.last_id, len(batch.images)

    def _claim_all(self) -> None:
        context = self._context
        cursor: int | None = 0
        while cursor is not None and not context.stopping.is_set():
            cursor, _ = self._claim(cursor)
        # Images other runs held when this pass went by: wait until they are scored (they
        # drop out) or their run is dead (claim_images takes them over).
        held = self._held_by_others()
        self.held_by_other_runs = len(held)
        last_finished = time.monotonic()
        patience = WAIT_FOR_OTHERS_LEASES * context.lease.total_seconds()
        while held and not context.stopping.is_set():
            cursor, claimed = 0, 0
            while cursor is not None and not context.stopping.is_set():
                cursor, count = self._claim(cursor, only_ids=held)
                claimed += count
            if not claimed:
                context.stopping.wait(context.poll_seconds)
            still_held = self._held_by_others()
            if len(still_held) < len(held):
                last_finished = time.monotonic()
            held = still_held
            if held and time.monotonic() - last_finished > patience:
                logger.warning(
                    "left %d images to the live runs that hold them: none of them finished "
                    "for %.0f s",
                    len(held),
                    patience,
                )
                self.left_to_other_runs = len(held)
                return

    def _held_by_others(self) -> list[int]:
        context = self._context
        with context.workspace.transaction() as session:
            # Held first: the images of the runs ended here are then retried, not forgotten.
            held = images_held_by_other_runs(session, context.scope, run_id=context.run_id)
            self._note_ended(end_dead_runs(session, live_after=live_after(session, context.lease)))
        # Waiting for others is progress: this run is alive and doing what it should.
        context.made_progress()
        return held

    def _note_ended(self, ended: list[int]) -> None:
        if ended:
            logger.warning("ended scoring runs %s, silent for longer than the lease", ended)
            self.dead_runs_ended.extend(ended)

    def _load(self, item: LoadedImage) -> LoadedImage:
        settings = self._context.workspace.settings.scoring
        if item.key is None:
            item.skipped = OUTSIDE_STORE
            return item
        if item.size > settings.max_object_bytes:
            # The listed size says so already: the bytes are never fetched.
            item.failure = ObjectTooLarge(item.key, item.size, settings.max_object_bytes).reason
            return item
        try:
            data = self._context.workspace.store.get(
                item.key, etag=item.etag, max_bytes=settings.max_object_bytes
            )
            item.pixels = decode_image(data, self._image_size, max_pixels=settings.max_image_pixels)
        except ObjectNotFound:
            item.retired = True
        except ObjectChanged:
            item.skipped = CHANGED_REASON
        except (ObjectTooLarge, ObjectUnreadable, ImageDecodeError) as error:
            item.failure = error.reason
        return item
