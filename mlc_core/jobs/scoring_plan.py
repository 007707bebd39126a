"""What a scoring run works on: discovery of the images in the store, and shards of them.

Discovery streams the listing of each prefix page by page and registers every image object
(kept by extension here, by magic bytes when it is decoded) as an (uri, etag) row. A new etag
is a new row; discovery never marks an image deleted, so a listing that fails or comes back
empty loses nothing.

A plan is discovery followed by a split of the images that need a score into shards: ranges of
image ids holding ``MLC_SCORING__SHARD_SIZE`` pending images each. A shard is plain data, so an
orchestrator can hand each one to a task on any machine (see
:func:`mlc_core.jobs.score.score_shard`); the plan holds a few numbers per shard, never the
image list.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import DBAPIError

from mlc_core.db.engine import database_failure
from mlc_core.db.model_versions import get_champion
from mlc_core.db.models import utc_now
from mlc_core.db.queries import ImageRecord, register_images
from mlc_core.db.work import (
    SCORE_MODES,
    ScoreMode,
    ScoringScope,
    has_current_images,
    pending_image_ranges,
    registered_image_versions,
)
from mlc_core.errors import NoChampionModel
from mlc_core.images import has_image_extension
from mlc_core.jobs.scoring_reports import ScoreReport
from mlc_core.jobs.workspace import Workspace
from mlc_core.storage import validate_prefix

__all__ = ["NOT_AN_IMAGE_TYPE", "ScoringPlan", "ScoringShard", "discover_images", "plan_scoring"]

logger = logging.getLogger(__name__)

NOT_AN_IMAGE_TYPE = "not_an_image_type"


@dataclass(frozen=True)
class ScoringShard:
    """One task's worth of scoring: the plan's pending images whose ids lie in a range.

    Only ids, names and a time, so it travels to another process or machine as a task
    parameter; whoever scores it opens the database and the store from its own settings,
    which must name the ones the plan was made in (:func:`~mlc_core.jobs.score.score_shard`
    checks).

    Attributes:
        index: the shard's place in the plan, from 0.
        first_image_id: the lowest image id of the range.
        last_image_id: the highest image id of the range (inclusive).
        pending: the images of the range that were pending when the plan was made.
        model_version_id: the id of the model version that scores.
        model_version: its name, to tell a database that is not the plan's.
        mode: which images count as pending.
        prefixes: the store prefixes the plan covers.
        store_uri: the root URI of the store the images live in.
        since: the plan's start; in the ``all`` and ``failed`` modes a score or failure
            written at or after it counts as done.
        batch_size: images per inference batch and per database transaction.
    """

    index: int
    first_image_id: int
    last_image_id: int
    pending: int
    model_version_id: int
    model_version: str
    mode: ScoreMode
    prefixes: tuple[str, ...]
    store_uri: str
    since: datetime
    batch_size: int


@dataclass
class ScoringPlan:
    """Discovery's counts (``report``, with the pending total) and the shards to score."""

    report: ScoreReport
    shards: list[ScoringShard]


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


def plan_scoring(
    workspace: Workspace,
    *,
    prefixes: Sequence[str] | None = None,
    mode: ScoreMode = "new",
    batch_size: int | None = None,
    shard_size: int | None = None,
) -> ScoringPlan:
    """Register the images under ``prefixes`` and split the pending ones into shards.

    Args:
        workspace: the store to list and the database to register in.
        prefixes: key prefixes to score; default the images prefix from the settings.
        mode: ``new``, ``stale``, ``all`` or ``failed`` (see
            :func:`mlc_core.jobs.score.score_images`).
        batch_size: images per inference batch and per transaction, for the shards.
        shard_size: pending images per shard; default ``MLC_SCORING__SHARD_SIZE``.

    Returns:
        Discovery's counts with the pending total, and the shards in id order (none when
        nothing is pending).

    Raises:
        NoChampionModel: no model has been trained yet.
        ValueError: an unknown mode.
        InvalidKey: a bad prefix.
        StorageError: the listing failed; the pages registered before stay registered.
        DatabaseError: the database failed.
    """
    if mode not in SCORE_MODES:
        raise ValueError(f"unknown scoring mode {mode!r}; expected one of {', '.join(SCORE_MODES)}")
    settings = workspace.settings
    prefixes = [validate_prefix(p) for p in (prefixes or [settings.images_prefix])]
    batch_size = batch_size or settings.scoring.batch_size
    shard_size = shard_size or settings.scoring.shard_size
    started = time.monotonic()
    # Taken before discovery, as a single run takes its start: whatever is written after it
    # by another run counts as done in the `all` and `failed` modes.
    since = utc_now()
    try:
        with workspace.transaction() as session:
            champion = get_champion(session)
            if champion is None:
                raise NoChampionModel()
            model_version_id, model_version = champion.id, champion.version
        report = ScoreReport(model_version=model_version, mode=mode, prefixes=prefixes)
        discover_images(workspace, prefixes, report)
        scope = ScoringScope(
            model_version_id=model_version_id,
            mode=mode,
            uri_prefixes=tuple(workspace.store.root_uri + prefix for prefix in prefixes),
            since=since,
        )
        with workspace.transaction() as session:
            ranges = list(pending_image_ranges(session, scope, size=shard_size))
    except DBAPIError as error:
        raise database_failure(workspace.engine, error) from error
    shards = [
        ScoringShard(
            index=index,
            first_image_id=first_id,
            last_image_id=last_id,
            pending=pending,
            model_version_id=model_version_id,
            model_version=model_version,
            mode=mode,
            prefixes=tuple(prefixes),
            store_uri=workspace.store.root_uri,
            since=since,
            batch_size=batch_size,
        )
        for index, (first_id, last_id, pending) in enumerate(ranges)
    ]
    report.pending = sum(shard.pending for shard in shards)
    report.seconds = time.monotonic() - started
    logger.info(
        "%d images to score with %s in %d shards of up to %d",
        report.pending,
        model_version,
        len(shards),
        shard_size,
    )
    return ScoringPlan(report=report, shards=shards)
