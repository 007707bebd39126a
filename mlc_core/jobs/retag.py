"""Recompute stored tag sets from stored probabilities, after thresholds change: no inference.

``mlc thresholds VERSION CLASS VALUE`` changes a threshold; the tag sets written before keep the
old one until this job runs. It pages through the version's score rows in id order, computes
each image's tags with the version's current thresholds, and rewrites only the tag sets that
changed, one transaction per page, so a rerun (or a run after a crash) does only what is left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from mlc_core.db.model_versions import require_champion, require_model_version
from mlc_core.db.models import ModelVersion, Run
from mlc_core.db.runs import finish_run, start_run
from mlc_core.db.scores import count_scores, replace_tags, stored_scores
from mlc_core.errors import describe_error
from mlc_core.jobs.workspace import Workspace
from mlc_core.labels import LabelVocabulary

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000


@dataclass
class RetagProgress:
    """A snapshot for progress bars and flow logs."""

    done: int
    total: int
    changed: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RetagReport:
    """What a re-tagging run did; plain data, safe to log or return from a flow.

    ``images`` counts the score rows looked at, ``changed`` the images whose tag set changed.
    """

    model_version: str
    thresholds: list[float]
    images: int = 0
    changed: int = 0
    tags_added: int = 0
    tags_removed: int = 0
    seconds: float = 0.0
    run_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _model_version(workspace: Workspace, version: str | None) -> ModelVersion:
    with workspace.transaction() as session:
        found = (
            require_champion(session)
            if version is None
            else require_model_version(session, version)
        )
        session.expunge(found)
    return found


def retag_images(
    workspace: Workspace,
    *,
    version: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[RetagProgress], None] | None = None,
) -> RetagReport:
    """Make every stored tag set of a model version match its current thresholds.

    Args:
        workspace: the database to read and write (the store is not used).
        version: the model version, e.g. ``"v3"``; default the champion.
        batch_size: score rows per page and per transaction.
        on_progress: called after each page is committed.

    Returns:
        How many images were looked at and changed, and how many tags were added and removed.

    Raises:
        NoChampionModel: no version was named and there is no champion.
        UnknownModelVersion: the named version does not exist.
        ValueError: ``batch_size`` is below 1.
        DatabaseError: the database failed; pages committed before stay.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    started = time.monotonic()
    model_version = _model_version(workspace, version)
    vocabulary = LabelVocabulary(tuple(model_version.classes))
    thresholds = [float(value) for value in model_version.thresholds]
    report = RetagReport(model_version=model_version.version, thresholds=thresholds)
    with workspace.transaction() as session:
        report.run_id = start_run(
            session, "retag", {"version": model_version.version, "thresholds": thresholds}
        ).id
        total = count_scores(session, model_version.id)
    try:
        _retag(workspace, model_version.id, vocabulary, report, batch_size, total, on_progress)
    except BaseException as error:
        report.seconds = time.monotonic() - started
        _finish(workspace, report, model_version.id, error)
        raise
    report.seconds = time.monotonic() - started
    _finish(workspace, report, model_version.id, None)
    logger.info(
        "re-tagged %d of %d images of %s (+%d / -%d tags) in %.1f s",
        report.changed,
        report.images,
        report.model_version,
        report.tags_added,
        report.tags_removed,
        report.seconds,
    )
    return report


def _retag(
    workspace: Workspace,
    model_version_id: int,
    vocabulary: LabelVocabulary,
    report: RetagReport,
    batch_size: int,
    total: int,
    on_progress: Callable[[RetagProgress], None] | None,
) -> None:
    started = time.monotonic()
    fallback = workspace.settings.scoring.top_class_fallback
    after_id = 0
    while True:
        with workspace.transaction() as session:
            rows = stored_scores(
                session, model_version_id, after_image_id=after_id, limit=batch_size
            )
            if not rows:
                return
            after_id = rows[-1].image_id
            changed: dict[int, list[tuple[str, float]]] = {}
            for row in rows:
                tags = vocabulary.tags_from_probabilities(
                    row.probabilities, report.thresholds, top_class_fallback=fallback
                )
                names = {name for name, _ in tags}
                old = {name for name, _ in row.tags}
                if names != old:
                    changed[row.image_id] = tags
                    report.tags_added += len(names - old)
                    report.tags_removed += len(old - names)
            replace_tags(session, model_version_id, changed)
        report.images += len(rows)
        report.changed += len(changed)
        if on_progress is not None:
            on_progress(
                RetagProgress(
                    done=report.images,
                    total=total,
                    changed=report.changed,
                    seconds=time.monotonic() - started,
                )
            )


def _finish(
    workspace: Workspace, report: RetagReport, model_version_id: int, error: BaseException | None
) -> None:
    with workspace.transaction() as session:
        finish_run(
            session,
            session.get_one(Run, report.run_id),
            status="failed" if error else "succeeded",
            counts=report.as_dict(),
            error=None if error is None else describe_error(error),
            model_version_id=model_version_id,
        )
