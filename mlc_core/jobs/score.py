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

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.exc import DBAPIError

from mlc_core.db.models import ModelVersion, Run
from mlc_core.db.queries import (
    ImageRecord,
    finish_run,
    get_champion,
    register_images,
    start_run,
)
from mlc_core.db.work import (
    SCORE_MODES,
    ScoreMode,
    ScoringScope,
    count_pending_images,
    database_failure,
    end_dead_runs,
    has_current_images,
    registered_image_versions,
    release_run_claims,
)
from mlc_core.errors import MlcError, NoChampionModel
from mlc_core.images import has_image_extension
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
from mlc_core.model.artifacts import deserialize_model
from mlc_core.model.predict import Predictor
from mlc_core.storage import key_for_uri, validate_prefix

__all__ = [
    "BATCHES_IN_FLIGHT",
    "SCORE_MODES",
    "ScoreMode",
    "ScoreProgress",
    "ScoreReport",
    "discover_images",
    "score_images",
]

logger = logging.getLogger(__name__)

NOT_AN_IMAGE_TYPE = "not_an_image_type"
# One model is kept per process; see _load_predictor.
_PREDICTOR_CACHE: dict[tuple[str, int], Predictor] = {}
_PREDICTOR_LOCK = threading.Lock()


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
    ``seconds`` is the whole run, ``scoring_seconds`` the part after discovery and model
    loading, and ``inference_seconds`` the time the model ran (close to ``scoring_seconds``
    when reading, decoding and writing keep up with it).
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
    inference_seconds: float = 0.0
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
                known = registered_image_versions(session, [(r.uri, r.etag) for r in records])
                # A nightly listing is mostly known, current images: nothing to write for them.
                if len(known) < len(records) or not all(known.values()):
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
    context = RunContext(workspace, scope, run_id, settings.scoring.claim_lease_seconds)
    heartbeat = Heartbeat(context)
    try:
        _score(context, champion, report, prefixes, batch_size, on_progress)
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


def _load_predictor(workspace: Workspace, champion: ModelVersion, batch_size: int) -> Predictor:
    """The champion's predictor, loaded and traced once per process and batch size.

    A process that runs many scoring jobs (a worker serving flows in-process, the tests) would
    otherwise read, verify and trace the same model every time. One model is kept.
    """
    cache_key = (champion.artifact_sha256, batch_size)
    with _PREDICTOR_LOCK:
        predictor = _PREDICTOR_CACHE.get(cache_key)
        if predictor is None:
            store = workspace.store
            model_key = key_for_uri(store, champion.artifact_uri)
            if model_key is None:
                raise MlcError(
                    f"model {champion.version} lives at {champion.artifact_uri}, outside the "
                    f"store {store.url}; point MLC_STORAGE_URL at the store it was trained with"
                )
            model = deserialize_model(store.get(model_key), champion.artifact_sha256)
            predictor = Predictor(model, batch_size=batch_size)
            _PREDICTOR_CACHE.clear()
            _PREDICTOR_CACHE[cache_key] = predictor
    return predictor


def _score(
    context: RunContext,
    champion: ModelVersion,
    report: ScoreReport,
    prefixes: list[str],
    batch_size: int,
    on_progress: Callable[[ScoreProgress], None] | None,
) -> None:
    workspace = context.workspace
    discover_images(workspace, prefixes, report)
    with workspace.transaction() as session:
        report.dead_runs_ended.extend(end_dead_runs(session, live_after=context.live_after()))
        report.pending = count_pending_images(session, context.scope)
    if report.pending == 0:
        return

    predictor = _load_predictor(workspace, champion, batch_size)
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
