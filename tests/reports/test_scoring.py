"""The score summary: the same figures in the artifact table and on the terminal."""

from __future__ import annotations

from mlc_core.reports.document import to_text
from mlc_core.reports.scoring import score_summary, score_summary_rows
from tests.reports.examples import score_report


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


def test_the_terminal_summary_names_each_failure_and_skip_reason() -> None:
    text = to_text(score_summary(score_report(dead_runs_ended=[4])))

    assert "listed 120 objects, 100 new images; scored 97, failed 3 with model v2" in text
    assert "failed: 2 x truncated_image" in text
    assert "skipped: 20 x not_an_image_type" in text
    assert "took over the images of runs [4]" in text
