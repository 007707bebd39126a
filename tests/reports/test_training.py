"""The retrain report and the training summary, rendered from a typed training report."""

from __future__ import annotations

from mlc_core.reports.document import to_markdown, to_text
from mlc_core.reports.training import retrain_report, training_summary
from tests.reports.examples import labels_report, training_report


def _markdown(**changes: object) -> str:
    return to_markdown(retrain_report(training_report(**changes)))


def test_the_retrain_report_shows_the_decision_and_each_class_ap_and_threshold() -> None:
    markdown = _markdown()

    assert "# Retrain: v2 is the new champion" in markdown
    assert "**Decision:** promoted: test mAP 0.850" in markdown
    assert "| circle | 0.900 | 0.410 | 6 |" in markdown
    assert "| square | 0.800 | 0.550 | 5 |" in markdown


def test_the_retrain_report_compares_champion_and_candidate_class_by_class() -> None:
    markdown = _markdown()

    assert "On the 10 test images of the champion v1:" in markdown
    assert "| circle | 0.750 | 0.900 | +0.150 |" in markdown
    assert "| **mAP** | 0.700 | 0.850 | **+0.150** |" in markdown


def test_the_retrain_report_of_a_candidate_that_lost_says_it_stays_a_candidate() -> None:
    markdown = _markdown(status="candidate", decision="kept the champion: mAP gain below margin")

    assert "# Retrain: v2 stays a candidate" in markdown
    assert "kept the champion: mAP gain below margin" in markdown


def test_the_first_model_has_no_champion_to_compare_with() -> None:
    markdown = _markdown(champion_comparison=None)

    assert "no champion to compare with" in markdown


def test_the_retrain_report_counts_the_labels_it_imported() -> None:
    labels = labels_report(rows=90, imported_images=88, unknown_keys=2)

    markdown = to_markdown(retrain_report(training_report(), labels=labels))

    assert "| labels imported | 88 images from 90 rows (2 problem rows) |" in markdown


def test_the_training_summary_in_the_terminal_says_the_same_without_markup() -> None:
    text = to_text(training_summary(training_report()))

    assert text.startswith("model v2 is champion: promoted: test mAP 0.850")
    assert "test split (12 images)" in text
    assert "circle  0.900      0.410" in text
    assert "mAP 0.850 · micro-F1 0.800" in text and "**" not in text


def test_the_retrain_report_shows_planned_and_used_time_against_the_budget() -> None:
    markdown = _markdown(
        budget_seconds=600.0, planned_epochs=42, stopped_at_budget=True, training_seconds=590.0
    )

    assert "used 590 s of a 600 s budget (42 epochs planned to fit it, stopped at the budget)" in (
        markdown
    )


def test_the_retrain_report_says_what_the_unlabelled_images_gave() -> None:
    semi = {
        "teacher": "champion v1",
        "unlabelled_images": 50,
        "used_images": 40,
        "pseudo_labelled_classes": ["circle"],
        "classes_without_teacher": ["square"],
    }

    markdown = _markdown(semi_supervised=semi)

    assert "40 of 50 pseudo-labelled by champion v1 (classes: circle)" in markdown
    assert "the teacher does not know square" in markdown
