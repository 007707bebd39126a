"""Artifacts: the retrain report, the score summary and the progress, published under stable
keys (what they say: tests/reports)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.artifacts import (
    RETRAIN_REPORT_KEY,
    SCORE_PROGRESS_KEY,
    SCORE_SUMMARY_KEY,
    ScoreProgressArtifact,
    publish_retrain_report,
    publish_score_summary,
)
from tests.fixtures.prefect import PrefectServer, read_artifacts
from tests.reports.examples import score_report, training_report


def _run_id(state: Any) -> Any:
    return state.state_details.flow_run_id


def test_a_published_retrain_report_is_kept_under_its_stable_key(
    prefect_api: PrefectServer,
) -> None:
    @flow
    def publishing() -> None:
        publish_retrain_report(training_report())

    state = publishing(return_state=True)

    [artifact] = read_artifacts(RETRAIN_REPORT_KEY, _run_id(state))
    assert artifact.type == "markdown"
    assert "# Retrain: v2 is the new champion" in artifact.data


def test_a_published_score_summary_is_a_table_under_its_stable_key(
    prefect_api: PrefectServer,
) -> None:
    @flow
    def publishing() -> None:
        publish_score_summary(score_report())

    state = publishing(return_state=True)

    [artifact] = read_artifacts(SCORE_SUMMARY_KEY, _run_id(state))
    assert artifact.type == "table"
    assert '"failed: truncated_image"' in artifact.data


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Progress:
    def __init__(self, done: int, total: int) -> None:
        self.done, self.total = done, total


def test_score_progress_is_written_at_most_every_interval_and_ends_at_one_hundred(
    prefect_api: PrefectServer,
) -> None:
    clock = _Clock()
    seen: list[float] = []

    @flow
    def scoring() -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

        progress = ScoreProgressArtifact("scoring images/", min_interval=5.0, clock=clock)

        def current() -> float:
            with get_client(sync_client=True) as client:
                [artifact] = client.read_artifacts(
                    artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[progress.artifact_id]))
                )
            return float(artifact.data)  # type: ignore[arg-type]

        for clock.now, done in ((0.0, 10), (1.0, 50), (6.0, 60)):
            progress(_Progress(done, 100))
            seen.append(current())
        progress.finish()
        seen.append(current())

    state = scoring(return_state=True)

    assert seen == [10.0, 10.0, 60.0, 100.0]
    [artifact] = read_artifacts(SCORE_PROGRESS_KEY, _run_id(state))
    assert artifact.type == "progress"
