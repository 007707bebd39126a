"""What a scoring run works on: shards of the images discovery found to score.

A plan is discovery (:mod:`mlc_core.jobs.scoring.discovery`) followed by a split of the images
that need a score into shards: ranges of
image ids holding ``MLC_SCORING__SHARD_SIZE`` pending images each. A shard is plain data, so an
orchestrator can hand each one to a task on any machine (see
:func:`mlc_core.jobs.scoring.score.score_shard`); the plan holds a few numbers per shard, never the
image list.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.exc import DBAPIError

from mlc_core.db.engine import database_failure, database_now
from mlc_core.db.model_versions import require_champion
from mlc_core.db.pending import ScoreMode, ScoringScope, check_score_mode, pending_image_ranges
from mlc_core.jobs.scoring.discovery import discover_images
from mlc_core.jobs.scoring.drift import basis_for_drift
from mlc_core.jobs.scoring.reports import ScoreReport
from mlc_core.jobs.workspace import Workspace
from mlc_core.storage import validate_prefix

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoringShard:
    """One task's worth of scoring: the plan's pending images whose ids lie in a range.

    Only ids, names and a time, so it travels to another process or machine as a task
    parameter; whoever scores it opens the database and the store from its own settings,
    which must name the ones the plan was made in (:func:`~mlc_core.jobs.scoring.score_shard`
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

    @property
    def id_range(self) -> list[int]:
        """``[first id, last id]``, as the shard's run records it."""
        return [self.first_image_id, self.last_image_id]


@dataclass
class ScoringPlan:
    """Discovery's counts (``report``, with the pending total) and the shards to score."""

    report: ScoreReport
    shards: list[ScoringShard]


def plan_scoring(
    workspace: Workspace,
    *,
    prefixes: Sequence[str] | None = None,
    mode: str = "new",
    batch_size: int | None = None,
    shard_size: int | None = None,
    discover: bool = True,
    force_retire: bool = False,
    start_after: str | None = None,
) -> ScoringPlan:
    """Register the images under ``prefixes`` and split the pending ones into shards.

    ``prefixes``, ``mode``, ``batch_size``, ``discover`` and ``force_retire`` are as for
    :func:`mlc_core.jobs.scoring.score_images`; ``shard_size`` (pending images per shard)
    defaults to ``MLC_SCORING__SHARD_SIZE``; ``start_after`` lists only the keys after it
    (see :func:`~mlc_core.jobs.scoring.discovery.discover_images`: it retires nothing).

    Returns:
        Discovery's counts with the pending total, and the shards in id order (none when
        nothing is pending).

    Raises:
        NoChampionModel, ValueError (an unknown mode), InvalidKey (a bad prefix): before any
            work. StorageError, DatabaseError: the listing or the database failed; the pages
            registered before stay registered.
    """
    checked_mode = check_score_mode(mode)
    settings = workspace.settings
    chosen = [validate_prefix(p) for p in (prefixes or [settings.images_prefix])]
    size = shard_size or settings.scoring.shard_size
    started = time.monotonic()
    try:
        # Taken before discovery, as a single run takes its start: whatever is written after
        # it by another run counts as done in the `all` and `failed` modes.
        with workspace.transaction() as session:
            since = database_now(session)
        report, scope = _discover(
            workspace,
            chosen,
            checked_mode,
            since,
            discover=discover,
            force_retire=force_retire,
            start_after=start_after,
        )
        with workspace.transaction() as session:
            ranges = list(pending_image_ranges(session, scope, size=size))
    except DBAPIError as error:
        raise database_failure(workspace.engine, error) from error
    template = ScoringShard(
        index=0,
        first_image_id=0,
        last_image_id=0,
        pending=0,
        model_version_id=scope.model_version_id,
        model_version=report.model_version,
        mode=checked_mode,
        prefixes=tuple(chosen),
        store_uri=workspace.store.root_uri,
        since=since,
        batch_size=batch_size or settings.scoring.batch_size,
    )
    shards = [
        replace(template, index=index, first_image_id=first, last_image_id=last, pending=pending)
        for index, (first, last, pending) in enumerate(ranges)
    ]
    report.pending = sum(shard.pending for shard in shards)
    report.seconds = time.monotonic() - started
    logger.info(
        "%d images to score with %s in %d shards of up to %d",
        report.pending,
        report.model_version,
        len(shards),
        size,
    )
    return ScoringPlan(report=report, shards=shards)


def _discover(
    workspace: Workspace,
    prefixes: list[str],
    mode: ScoreMode,
    since: datetime,
    *,
    discover: bool,
    force_retire: bool,
    start_after: str | None,
) -> tuple[ScoreReport, ScoringScope]:
    """Discovery's report, and the scope of the images the champion has to score."""
    with workspace.transaction() as session:
        champion = require_champion(session)
        model_version_id, model_version = champion.id, champion.version
        basis = basis_for_drift(workspace, champion)
    report = ScoreReport(
        model_version=model_version, mode=mode, prefixes=prefixes, drift_basis=basis
    )
    if discover:
        discover_images(workspace, prefixes, report, force_retire=force_retire, since=start_after)
    scope = ScoringScope(
        model_version_id=model_version_id,
        mode=mode,
        uri_prefixes=tuple(workspace.store.root_uri + prefix for prefix in prefixes),
        since=since,
    )
    return report, scope
