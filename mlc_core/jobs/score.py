"""Score images in the store with the champion model and write probabilities and tag sets.

A run has two phases:
1. Discovery streams the listing of each prefix page by page and registers every image object
   (kept by extension here, by magic bytes when it is decoded) as an (uri, etag) row. A new
   etag is a new row; discovery never marks an image deleted, so a listing that fails or comes
   back empty loses nothing.
2. Scoring claims the registered images that need a score under the chosen mode a batch at a
   time, reads and decodes them in a thread pool, runs the model on fixed-size batches, and
   commits each batch's probabilities, tags, failures and released claims in one transaction
   from a writer thread. Claiming, reading, decoding, inference and writing overlap, and memory
   is bounded by a few batches in flight.

Claims (see :mod:`mlc_core.db.work`) keep concurrent runs from scoring an image twice; a
heartbeat thread keeps this run's claims alive, and the claims of a run killed mid-way are taken
over once its heartbeat is older than the lease. A corrupt image is recorded with its reason and
never stops the run; an unreachable store or database stops it, leaving every committed batch
whole and nothing partial.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.exc import DBAPIError

from mlc_core.db.models import ModelVersion, Run, utc_now
from mlc_core.db.queries import (
    ImageRecord,
    ScoreRecord,
    finish_run,
    get_champion,
    record_failures,
    register_images,
    start_run,
    write_scores,
)
from mlc_core.db.work import (
    SCORE_MODES,
    ScoreMode,
    ScoringScope,
    claim_images,
    count_pending_images,
    current_thresholds,
    database_failure,
    delete_scores,
    end_dead_runs,
    has_current_images,
    images_held_by_other_runs,
    known_image_versions,
    record_heartbeat,
    release_claims,
    release_run_claims,
)
from mlc_core.errors import ImageDecodeError, MlcError, NoChampionModel, ObjectNotFound
from mlc_core.images import decode_image, has_image_extension
from mlc_core.jobs.workspace import Workspace
from mlc_core.labels import LabelVocabulary
from mlc_core.model.artifacts import deserialize_model
from mlc_core.model.predict import Predictor
from mlc_core.storage import key_for_uri, validate_prefix

logger = logging.getLogger(__name__)

# Batches claimed and being read ahead of inference: enough to keep the model busy, few enough
# to bound memory (decoded pixels of about this many batches, whatever the number of images).
BATCHES_IN_FLIGHT = 3
DELETED_REASON = "deleted_before_read"
NOT_AN_IMAGE_TYPE = "not_an_image_type"
OUTSIDE_STORE = "outside_the_store"
# How often a waiting or heartbeating thread looks up, at most.
_POLL_SECONDS = 1.0


@dataclass
class ScoreProgress:
    """A snapshot for progress bars and flow logs."""

    done: int
    total: int
    scored: int
    failed: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ScoreReport:
    """What a scoring run counted; plain data, safe to log or return from a flow.

    ``scored`` counts images that went through the model (by this run: images another run
    scored meanwhile are not counted); ``skipped`` counts objects left alone by reason;
    ``seconds`` is the whole run and ``scoring_seconds`` the part after discovery and model
    loading.
    """

    model_version: str
    mode: str
    prefixes: list[str]
    listed: int = 0
    new: int = 0
    pending: int = 0
    scored: int = 0
    failed: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    held_by_other_runs: int = 0
    dead_runs_ended: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    scoring_seconds: float = 0.0
    run_id: int | None = None

    @property
    def images_per_second(self) -> float:
        return (self.scored + self.failed) / self.seconds if self.seconds > 0 else 0.0

    @property
    def scoring_images_per_second(self) -> float:
        done = self.scored + self.failed
        return done / self.scoring_seconds if self.scoring_seconds > 0 else 0.0

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "images_per_second": round(self.images_per_second, 2),
            "scoring_images_per_second": round(self.scoring_images_per_second, 2),
        }


@dataclass
class _Item:
    image_id: int
    key: str | None
    pixels: np.ndarray | None = None
    failure: str | None = None
    skipped: str | None = None


@dataclass
class _Batch:
    """One claimed batch: the futures of its reads, in claim order."""

    image_ids: list[int]
    futures: list[Future[_Item]]


@dataclass
class _Result:
    """What the writer commits for one batch."""

    image_ids: list[int]
    probabilities: list[tuple[int, list[float]]]
    failures: list[tuple[int, str]]


class _RunContext:
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


class _Heartbeat:
    """Refreshes the run's heartbeat from a background thread until stopped."""

    def __init__(self, context: _RunContext) -> None:
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


class _BatchWriter:
    """Commits batches from a background thread so inference never waits on the database."""

    def __init__(self, context: _RunContext, vocabulary: LabelVocabulary, replace: bool) -> None:
        self._context = context
        self._vocabulary = vocabulary
        self._replace = replace
        self._queue: queue.Queue[_Result | None] = queue.Queue(maxsize=BATCHES_IN_FLIGHT)
        self._error: BaseException | None = None
        self.inserted = 0
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

    def _commit(self, result: _Result) -> None:
        context = self._context
        model_version_id = context.scope.model_version_id
        with context.workspace.transaction() as session:
            if not record_heartbeat(session, context.run_id):
                raise context.abandoned()
            # Read in this transaction: thresholds changed by `mlc thresholds` mid-run apply
            # from the next batch on, and `mlc retag` sees every batch committed before it.
            thresholds = current_thresholds(session, model_version_id)
            scores = [
                ScoreRecord(
                    image_id=image_id,
                    probabilities=probabilities,
                    tags=self._vocabulary.tags_from_probabilities(probabilities, thresholds),
                )
                for image_id, probabilities in result.probabilities
            ]
            if self._replace:
                delete_scores(
                    session,
                    model_version_id=model_version_id,
                    image_ids=[row.image_id for row in scores],
                )
            self.inserted += write_scores(session, model_version_id, context.run_id, scores)
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

    def submit(self, result: _Result) -> None:
        self.check()
        self._queue.put(result)

    def close(self) -> None:
        """Commit what was submitted, stop the thread, and raise its error if it had one."""
        self._queue.put(None)
        self._thread.join()
        self.check()


class _Feeder:
    """Claims batches and starts their reads from a background thread.

    At most ``BATCHES_IN_FLIGHT`` batches wait for inference; the thread blocks until the
    scoring thread takes one. When no unclaimed pending image is left, it waits for the images
    other live runs hold: they either get scored (and drop out) or their run dies and this run
    takes them over, so a run ends only when every image of its scope is done.
    """

    def __init__(
        self,
        context: _RunContext,
        pool: ThreadPoolExecutor,
        batch_size: int,
        image_size: int,
        report: ScoreReport,
    ) -> None:
        self._context = context
        self._pool = pool
        self._batch_size = batch_size
        self._image_size = image_size
        self._report = report
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=BATCHES_IN_FLIGHT)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mlc-score-feeder", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[_Batch]:
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

    def _put(self, batch: _Batch | None) -> bool:
        """Queue ``batch``, waiting for room; False when the run is stopping meanwhile."""
        while True:
            try:
                self._queue.put(batch, timeout=0.1)
                return True
            except queue.Full:
                if self._context.stopping.is_set():
                    return False

    def _claim(self, after_id: int, only_ids: Sequence[int] | None = None) -> int | None:
        """Claim one batch and start reading it; return the next cursor or None at the end."""
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
        if batch.images:
            store = context.workspace.store
            items = [_Item(image_id, key_for_uri(store, uri)) for image_id, uri in batch.images]
            futures = [self._pool.submit(self._load, item) for item in items]
            if not self._put(_Batch([item.image_id for item in items], futures)):
                return None
        return batch.last_id

    def _claim_all(self) -> None:
        after_id: int | None = 0
        while after_id is not None and not self._context.stopping.is_set():
            after_id = self._claim(after_id)
        held = self._held_by_others()
        self._report.held_by_other_runs = len(held)
        while held and not self._context.stopping.is_set():
            self._context.stopping.wait(self._context.poll_seconds)
            cursor: int | None = 0
            while cursor is not None and not self._context.stopping.is_set():
                cursor = self._claim(cursor, only_ids=held)
            held = self._held_by_others()

    def _held_by_others(self) -> list[int]:
        context = self._context
        with context.workspace.transaction() as session:
            ended = end_dead_runs(session, live_after=context.live_after())
            held = images_held_by_other_runs(
                session, context.scope, run_id=context.run_id, live_after=context.live_after()
            )
        if ended:
            logger.warning("ended scoring runs %s, silent for longer than the lease", ended)
            self._report.dead_runs_ended.extend(ended)
        return held

    def _load(self, item: _Item) -> _Item:
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


def _reason_kind(reason: str) -> str:
    """A short bucket for counting failures ("truncated or corrupt JPEG", "empty file", ...)."""
    return reason.split(":", 1)[0].strip()[:60]


def discover_images(workspace: Workspace, prefixes: Sequence[str], report: ScoreReport) -> None:
    """Register every image object under ``prefixes``, one listing page at a time.

    Objects whose name has no image extension are counted as skipped. Nothing is ever marked
    deleted: an object missing from the listing keeps its rows. A prefix whose listing is
    empty while current images are known under it is noted in ``report.warnings``.

    Raises:
        StorageError: the listing failed; the pages registered before stay registered.
    """
    store = workspace.store
    for prefix in prefixes:
        listed_images = 0
        for page in store.list_pages(prefix):
            report.listed += len(page)
            images = [info for info in page if has_image_extension(info.key)]
            if len(images) < len(page):
                report.skip(NOT_AN_IMAGE_TYPE, len(page) - len(images))
            if not images:
                continue
            listed_images += len(images)
            records = [
                ImageRecord(store.uri(info.key), info.etag, info.size, info.modified)
                for info in images
            ]
            with workspace.transaction() as session:
                known = known_image_versions(session, [(r.uri, r.etag) for r in records])
                register_images(session, records)
            report.new += len(records) - len(known)
        if listed_images == 0:
            with workspace.transaction() as session:
                known_before = has_current_images(session, store.root_uri + prefix)
            if known_before:
                warning = (
                    f"the listing of {store.url} under {prefix!r} has no images although images "
                    "were registered there before; nothing was marked deleted (check the store "
                    "URL and the prefix)"
                )
                logger.warning(warning)
                report.warnings.append(warning)


def score_images(
    workspace: Workspace,
    *,
    prefixes: Sequence[str] | None = None,
    mode: ScoreMode = "new",
    batch_size: int | None = None,
    on_progress: Callable[[ScoreProgress], None] | None = None,
) -> ScoreReport:
    """Discover and score images under ``prefixes`` with the champion model.

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
    prefixes = [validate_prefix(p) for p in (prefixes or [settings.images_prefix])]
    batch_size = batch_size or settings.scoring.batch_size
    started = time.monotonic()
    try:
        with workspace.transaction() as session:
            champion = get_champion(session)
            if champion is None:
                raise NoChampionModel()
            session.expunge(champion)
            run = start_run(
                session, "score", {"mode": mode, "prefixes": prefixes, "batch_size": batch_size}
            )
            run.heartbeat_at = run.started_at
            run_id, since = run.id, run.started_at
    except DBAPIError as error:
        raise database_failure(workspace.engine, error) from error
    report = ScoreReport(
        model_version=champion.version, mode=mode, prefixes=prefixes, run_id=run_id
    )
    scope = ScoringScope(
        model_version_id=champion.id,
        mode=mode,
        uri_prefixes=tuple(workspace.store.root_uri + prefix for prefix in prefixes),
        since=since,
    )
    context = _RunContext(workspace, scope, run_id, settings.scoring.claim_lease_seconds)
    heartbeat = _Heartbeat(context)
    try:
        _score(context, champion, report, prefixes, batch_size, on_progress, started)
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
        "scored %d images (%d failed, %d new) with %s in %.1f s",
        report.scored,
        report.failed,
        report.new,
        champion.version,
        report.seconds,
    )
    return report


def _finish(
    context: _RunContext,
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
                error=None
                if error is None
                else (str(error) if isinstance(error, MlcError) else repr(error)),
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
    context: _RunContext,
    champion: ModelVersion,
    report: ScoreReport,
    prefixes: list[str],
    batch_size: int,
    on_progress: Callable[[ScoreProgress], None] | None,
    started: float,
) -> None:
    workspace = context.workspace
    store = workspace.store
    discover_images(workspace, prefixes, report)
    with workspace.transaction() as session:
        report.dead_runs_ended.extend(end_dead_runs(session, live_after=context.live_after()))
        report.pending = count_pending_images(session, context.scope)
    if report.pending == 0:
        return

    model_key = key_for_uri(store, champion.artifact_uri)
    if model_key is None:
        raise MlcError(
            f"model {champion.version} lives at {champion.artifact_uri}, outside the store "
            f"{store.url}; point MLC_STORAGE_URL at the store it was trained with"
        )
    model = deserialize_model(store.get(model_key), champion.artifact_sha256)
    predictor = Predictor(model, batch_size=batch_size)
    vocabulary = LabelVocabulary(tuple(champion.classes))
    failures_by_reason: Counter[str] = Counter()
    scoring_started = time.monotonic()
    done = 0

    writer = _BatchWriter(context, vocabulary, replace=(context.scope.mode == "all"))
    pool = ThreadPoolExecutor(
        max_workers=workspace.settings.scoring.read_workers, thread_name_prefix="mlc-read"
    )
    feeder = _Feeder(context, pool, batch_size, champion.image_size, report)
    failed = True
    try:
        for batch in feeder:
            items = [future.result() for future in batch.futures]
            good = [item for item in items if item.pixels is not None]
            probabilities: list[tuple[int, list[float]]] = []
            if good:
                rows = predictor.predict(np.stack([item.pixels for item in good]))  # type: ignore[misc]
                # Rounded before tags are chosen, so `mlc retag` on the stored values gives
                # exactly the tags written here.
                probabilities = [
                    (item.image_id, [round(float(p), 6) for p in row])
                    for item, row in zip(good, rows, strict=True)
                ]
            failures = [(item.image_id, item.failure) for item in items if item.failure]
            writer.submit(_Result(batch.image_ids, probabilities, failures))
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
                        seconds=time.monotonic() - started,
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
        report.scoring_seconds = time.monotonic() - scoring_started
