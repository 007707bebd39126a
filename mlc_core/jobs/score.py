"""Score images in the store with the champion model and write probabilities and tag sets.

A run has two phases:
1. Discovery streams the listing of each prefix page by page and registers every image object
   as an (uri, etag) row. A new etag is a new row; nothing is ever deleted.
2. Scoring pages through the registered images that need a score under the chosen mode, reads
   and decodes them in a thread pool, runs the model on fixed-size batches, and commits each
   batch's probabilities, tags and failures in one transaction from a writer thread. Reading,
   decoding, inference and writing overlap, and memory is bounded by a few batches in flight.

A corrupt image is recorded with its reason and never stops the run; an unreachable store or
database stops it, leaving every committed batch whole and nothing partial.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mlc_core.db.models import Run
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
    count_pending_images,
    delete_scores,
    known_image_versions,
    pending_images,
)
from mlc_core.errors import ImageDecodeError, MlcError, NoChampionModel, ObjectNotFound
from mlc_core.images import decode_image, has_image_extension
from mlc_core.jobs.workspace import Workspace
from mlc_core.labels import LabelVocabulary
from mlc_core.model.artifacts import deserialize_model
from mlc_core.model.predict import Predictor
from mlc_core.storage import key_for_uri, validate_prefix

logger = logging.getLogger(__name__)

# Batches read ahead of inference: enough to keep the model busy, few enough to bound memory.
BATCHES_IN_FLIGHT = 3
DELETED_REASON = "deleted_before_read"


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
    """What a scoring run counted; plain data, safe to log or return from a flow."""

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
    seconds: float = 0.0
    run_id: int | None = None

    @property
    def images_per_second(self) -> float:
        return (self.scored + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_second": round(self.images_per_second, 2)}


@dataclass
class _Item:
    image_id: int
    key: str
    pixels: np.ndarray | None = None
    failure: str | None = None
    deleted: bool = False


def _reason_kind(reason: str) -> str:
    """A short bucket for counting failures ("truncated", "not an image", ...)."""
    return reason.split(":", 1)[0].strip()[:60]


class _BatchWriter:
    """Commits batches from a background thread so inference never waits on the database."""

    def __init__(self, workspace: Workspace, model_version_id: int, run_id: int, replace: bool):
        self._workspace = workspace
        self._model_version_id = model_version_id
        self._run_id = run_id
        self._replace = replace
        self._queue: queue.Queue[tuple[list[ScoreRecord], list[tuple[int, str]]] | None] = (
            queue.Queue(maxsize=BATCHES_IN_FLIGHT)
        )
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mlc-score-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (work := self._queue.get()) is not None:
            if self._error is not None:
                continue
            scores, failures = work
            try:
                with self._workspace.transaction() as session:
                    if self._replace:
                        delete_scores(
                            session,
                            model_version_id=self._model_version_id,
                            image_ids=[row.image_id for row in scores],
                        )
                    write_scores(session, self._model_version_id, self._run_id, scores)
                    record_failures(session, failures)
            except BaseException as error:  # re-raised in the scoring thread by check()
                self._error = error

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, scores: list[ScoreRecord], failures: list[tuple[int, str]]) -> None:
        self.check()
        self._queue.put((scores, failures))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.check()


def _load_item(workspace: Workspace, item: _Item, image_size: int) -> _Item:
    settings = workspace.settings.scoring
    try:
        data = workspace.store.get(item.key)
    except ObjectNotFound:
        item.deleted = True
        return item
    try:
        item.pixels = decode_image(data, image_size, max_pixels=settings.max_image_pixels)
    except ImageDecodeError as error:
        item.failure = error.reason
    return item


def discover_images(workspace: Workspace, prefixes: Sequence[str], report: ScoreReport) -> None:
    """Register every image object under ``prefixes``, one listing page at a time."""
    store = workspace.store
    for prefix in prefixes:
        for page in store.list_pages(prefix):
            report.listed += len(page)
            images = [info for info in page if has_image_extension(info.key)]
            skipped = len(page) - len(images)
            if skipped:
                report.skipped["not_an_image_type"] = (
                    report.skipped.get("not_an_image_type", 0) + skipped
                )
            if not images:
                continue
            records = [
                ImageRecord(store.uri(info.key), info.etag, info.size, info.modified)
                for info in images
            ]
            with workspace.transaction() as session:
                known = known_image_versions(session, [(r.uri, r.etag) for r in records])
                register_images(session, records)
            report.new += len(records) - len(known)


def _pending_batches(
    workspace: Workspace,
    model_version_id: int,
    mode: ScoreMode,
    uri_prefixes: list[str],
    batch_size: int,
) -> Iterator[list[_Item]]:
    after_id = 0
    while True:
        with workspace.transaction() as session:
            rows = pending_images(
                session,
                model_version_id=model_version_id,
                mode=mode,
                uri_prefixes=uri_prefixes,
                after_id=after_id,
                limit=batch_size,
            )
        if not rows:
            return
        after_id = rows[-1][0]
        items = []
        for image_id, uri in rows:
            key = key_for_uri(workspace.store, uri)
            if key is not None:
                items.append(_Item(image_id, key))
        yield items


def score_images(
    workspace: Workspace,
    *,
    prefixes: Sequence[str] | None = None,
    mode: ScoreMode = "new",
    batch_size: int | None = None,
    on_progress: Callable[[ScoreProgress], None] | None = None,
) -> ScoreReport:
    """Discover and score images under ``prefixes`` with the champion model.

    Args:
        workspace: the store to read images from and the database to write to.
        prefixes: key prefixes to score; default the images prefix from the settings.
        mode: ``new`` (no score from the champion yet), ``stale`` (scored only by older
            versions), ``all`` (every image, replacing the champion's earlier rows) or
            ``failed`` (retry images that failed to decode).
        batch_size: images per inference batch and per database transaction.
        on_progress: called after each committed-to-write batch.

    Returns:
        The run's counts: listed, new, scored, failed by reason, skipped, throughput.

    Raises:
        NoChampionModel: no model has been trained yet.
        ValueError: an unknown mode or a bad prefix.
        StorageError, DatabaseError: the store or database failed; committed batches stay.
    """
    if mode not in SCORE_MODES:
        raise ValueError(f"unknown scoring mode {mode!r}; expected one of {', '.join(SCORE_MODES)}")
    settings = workspace.settings
    prefixes = [validate_prefix(p) for p in (prefixes or [settings.images_prefix])]
    batch_size = batch_size or settings.scoring.batch_size
    started = time.monotonic()

    with workspace.transaction() as session:
        champion = get_champion(session)
        if champion is None:
            raise NoChampionModel()
        session.expunge(champion)
        run_id = start_run(
            session,
            "score",
            {"mode": mode, "prefixes": prefixes, "batch_size": batch_size},
        ).id
    report = ScoreReport(
        model_version=champion.version, mode=mode, prefixes=prefixes, run_id=run_id
    )
    try:
        _score(
            workspace, champion, run_id, report, prefixes, mode, batch_size, on_progress, started
        )
    except BaseException as error:
        report.seconds = time.monotonic() - started
        _finish(workspace, run_id, report, champion.id, error)
        raise
    report.seconds = time.monotonic() - started
    _finish(workspace, run_id, report, champion.id, None)
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
    workspace: Workspace,
    run_id: int,
    report: ScoreReport,
    model_version_id: int,
    error: BaseException | None,
) -> None:
    counts = report.as_dict()
    with workspace.transaction() as session:
        finish_run(
            session,
            session.get_one(Run, run_id),
            status="failed" if error else "succeeded",
            counts=counts,
            error=None
            if error is None
            else (str(error) if isinstance(error, MlcError) else repr(error)),
            model_version_id=model_version_id,
        )


def _score(
    workspace: Workspace,
    champion: Any,
    run_id: int,
    report: ScoreReport,
    prefixes: list[str],
    mode: ScoreMode,
    batch_size: int,
    on_progress: Callable[[ScoreProgress], None] | None,
    started: float,
) -> None:
    store = workspace.store
    discover_images(workspace, prefixes, report)
    uri_prefixes = [store.root_uri + prefix for prefix in prefixes]
    with workspace.transaction() as session:
        report.pending = count_pending_images(
            session, model_version_id=champion.id, mode=mode, uri_prefixes=uri_prefixes
        )
    if report.pending == 0:
        return

    vocabulary = LabelVocabulary(tuple(champion.classes))
    thresholds = list(champion.thresholds)
    model_key = key_for_uri(store, champion.artifact_uri)
    if model_key is None:
        raise MlcError(
            f"model {champion.version} lives at {champion.artifact_uri}, outside the store "
            f"{store.url}; point MLC_STORAGE_URL at the store it was trained with"
        )
    model = deserialize_model(store.get(model_key), champion.artifact_sha256)
    predictor = Predictor(model, batch_size=batch_size)
    image_size = champion.image_size
    failures_by_reason: Counter[str] = Counter()
    done = 0

    def process(futures: list[Future[_Item]]) -> None:
        nonlocal done
        items = [future.result() for future in futures]
        good = [item for item in items if item.pixels is not None]
        failures = [(item.image_id, item.failure) for item in items if item.failure]
        deleted = sum(item.deleted for item in items)
        scores: list[ScoreRecord] = []
        if good:
            probabilities = predictor.predict(np.stack([item.pixels for item in good]))  # type: ignore[misc]
            for item, row in zip(good, probabilities, strict=True):
                scores.append(
                    ScoreRecord(
                        image_id=item.image_id,
                        probabilities=[round(float(p), 6) for p in row],
                        tags=vocabulary.tags_from_probabilities(row, thresholds),
                    )
                )
        writer.submit(scores, [(image_id, reason) for image_id, reason in failures if reason])
        for _, reason in failures:
            if reason:
                failures_by_reason[_reason_kind(reason)] += 1
        report.scored += len(scores)
        report.failed += len(failures)
        if deleted:
            report.skipped[DELETED_REASON] = report.skipped.get(DELETED_REASON, 0) + deleted
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

    writer = _BatchWriter(workspace, champion.id, run_id, replace=(mode == "all"))
    try:
        with ThreadPoolExecutor(
            max_workers=workspace.settings.scoring.read_workers, thread_name_prefix="mlc-read"
        ) as pool:
            in_flight: deque[list[Future[_Item]]] = deque()
            for items in _pending_batches(workspace, champion.id, mode, uri_prefixes, batch_size):
                in_flight.append(
                    [pool.submit(_load_item, workspace, item, image_size) for item in items]
                )
                if len(in_flight) > BATCHES_IN_FLIGHT:
                    process(in_flight.popleft())
            while in_flight:
                process(in_flight.popleft())
    finally:
        writer.close()
    report.failed_by_reason = dict(failures_by_reason)
