"""Prefect artifacts: what a run did, where people look for it (the run page and Artifacts page).

Keys are stable, so the Artifacts page shows each key's history run after run:

- ``mlc-retrain-report``  markdown: per-class AP and thresholds, champion vs candidate, the
  promotion decision and its reason.
- ``mlc-score-summary``   table: listed, new, scored, failed by reason, images/s, model version.
- ``mlc-score-progress``  progress (percent) while a scoring run works.
- ``mlc-nightly-report``  markdown: what the nightly run scored and why it retrained or not.

What they say is built in :mod:`mlc_core.reports` (the same documents the CLI prints); these
functions only publish, and must run inside a flow or task run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from mlc_core.jobs.labels_import import LabelImportReport
from mlc_core.jobs.schedule import NightlyOutcome
from mlc_core.jobs.scoring.reports import ScoreReport
from mlc_core.jobs.training.report import TrainingReport
from mlc_core.reports.document import to_markdown
from mlc_core.reports.scoring import RETRAIN_REPORT_KEY, nightly_report, score_summary_rows
from mlc_core.reports.training import retrain_report

SCORE_SUMMARY_KEY = "mlc-score-summary"
SCORE_PROGRESS_KEY = "mlc-score-progress"
NIGHTLY_REPORT_KEY = "mlc-nightly-report"
__all__ = [
    "NIGHTLY_REPORT_KEY",
    "RETRAIN_REPORT_KEY",
    "SCORE_PROGRESS_KEY",
    "SCORE_SUMMARY_KEY",
    "ScoreProgressArtifact",
    "publish_nightly_report",
    "publish_retrain_report",
    "publish_score_summary",
]


def publish_retrain_report(
    training: TrainingReport, *, labels: LabelImportReport | None = None
) -> UUID:
    """Publish the retrain report under ``mlc-retrain-report``; returns the artifact id."""
    artifact_id = create_markdown_artifact(
        markdown=to_markdown(retrain_report(training, labels=labels)),
        key=RETRAIN_REPORT_KEY,
        description=f"retrain: {training.version} {training.status}",
    )
    return cast(UUID, artifact_id)


def publish_score_summary(report: ScoreReport) -> UUID:
    """Publish the score summary under ``mlc-score-summary``; returns the artifact id."""
    artifact_id = create_table_artifact(
        table=score_summary_rows(report),
        key=SCORE_SUMMARY_KEY,
        description=(
            f"score ({report.mode}): {report.scored} scored, {report.failed} failed with "
            f"{report.model_version}" + ("; drift flagged" if report.drift else "")
        ),
    )
    return cast(UUID, artifact_id)


def publish_nightly_report(outcome: NightlyOutcome) -> UUID:
    """Publish the nightly report under ``mlc-nightly-report``; returns the artifact id."""
    artifact_id = create_markdown_artifact(
        markdown=to_markdown(nightly_report(outcome)),
        key=NIGHTLY_REPORT_KEY,
        description="nightly: " + ("retrained" if outcome.decision.retrain else "scored only"),
    )
    return cast(UUID, artifact_id)


class ScoreProgressArtifact:
    """A progress artifact (``mlc-score-progress``) that follows a scoring run.

    Call it with each progress event (anything with ``done`` and ``total``); it writes to the
    API at most every ``min_interval`` seconds, so a fast run does not flood the server.
    :meth:`finish` sets 100 %.
    """

    def __init__(
        self,
        description: str,
        *,
        min_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._description = description
        self._min_interval = min_interval
        self._clock = clock
        self._artifact_id: UUID | None = None
        self._last_written = 0.0
        self._last_percent: float | None = None

    @property
    def artifact_id(self) -> UUID | None:
        """The artifact's id once it exists (after the first event)."""
        return self._artifact_id

    def __call__(self, event: Any) -> None:
        total = max(int(event.total), 0)
        percent = 100.0 if total == 0 else min(100.0, 100.0 * int(event.done) / total)
        now = self._clock()
        if self._artifact_id is not None and now - self._last_written < self._min_interval:
            return
        self._write(percent, now)

    def finish(self) -> None:
        """Mark the run's progress as complete."""
        self._write(100.0, self._clock())

    def _write(self, percent: float, now: float) -> None:
        if percent == self._last_percent:
            return
        if self._artifact_id is None:
            self._artifact_id = cast(
                UUID,
                create_progress_artifact(
                    progress=percent, key=SCORE_PROGRESS_KEY, description=self._description
                ),
            )
        else:
            update_progress_artifact(artifact_id=self._artifact_id, progress=percent)
        self._last_written = now
        self._last_percent = percent
