"""Artifacts: the retrain report, the score summary and the progress, under stable keys."""

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
    retrain_report_markdown,
    score_summary_rows,
)
from tests.fixtures.prefect import PrefectServer, read_artifacts
from tests.flows.reports import score_report, training_report


def test_the_retrain_report_shows_the_decision_and_each_class_ap_and_threshold() -> None:
    markdown = retrain_report_markdown(training_report())

    assert "# Retrain: v2 is the new champion" in markdown
    assert "**Decision:** promoted: test mAP 0.850" in markdown
    assert "| circle | 0.900 | 0.410 | 6 |" in markdown
    assert "| square | 0.800 | 0.550 | 5 |" in markdown


def test_the_retrain_report_compares_champion_and_candidate_class_by_class() -> None:
    markdown = retrain_report_markdown(training_report())

    assert "On the 10 test images of the champion v1:" in markdown
    assert "| circle | 0.750 | 0.900 | +0.150 |" in markdown
    assert "| **mAP** | 0.700 | 0.850 | **+0.150** |" in markdown


def test_the_retrain_report_of_a_candidate_that_lost_says_it_stays_a_candidate() -> None:
    markdown = retrain_report_markdown(
        training_report(status="candidate", decision="kept the champion: mAP gain below margin")
    )

    assert "# Retrain: v2 stays a candidate" in markdown
    assert "kept the champion: mAP gain below margin" in markdown


def test_the_first_model_has_no_champion_to_compare_with() -> None:
    markdown = retrain_report_markdown(training_report(champion_comparison=None))

    assert "no champion to compare with" in markdown


def test_the_retrain_report_counts_the_labels_it_imported() -> None:
    labels = {"rows": 90, "imported_images": 88, "problem_counts": {"unknown_key": 2}}

    markdown = retrain_report_markdown(training_report(), labels=labels)

    assert "| labels imported | 88 images from 90 rows (2 problem rows) |" in markdown


def test_the_score_summary_lists_the_counts_each_failure_reason_and_the_speed() -> None:
    rows = {row["figure"]: row["value"] for row in score_summary_rows(score_report())}

    assert rows["model version"] == "v2"
    assert (rows["objects listed"], rows["new images"], rows["scored"], rows["failed"]) == (
        120,
        100,
        97,
        3,
    )
    assert rows["failed: truncated_image"] == 2
    assert rows["failed: not_an_image"] == 1
    assert rows["images/s"] == 48.25


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
