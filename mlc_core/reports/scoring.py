"""How scoring, re-tagging, a labels import and a nightly run read to people."""

from __future__ import annotations

from typing import Any

from mlc_core.jobs.labels_import import LabelImportReport
from mlc_core.jobs.retag import RetagReport
from mlc_core.jobs.schedule import NightlyOutcome
from mlc_core.jobs.scoring.reports import ScoreReport
from mlc_core.reports.document import Document, Heading, Table

RETRAIN_REPORT_KEY = "mlc-retrain-report"


def score_summary_rows(report: ScoreReport) -> list[dict[str, Any]]:
    """The score summary as figure/value rows (one per count, one per failure reason)."""
    rows: list[tuple[str, Any]] = [
        ("model version", report.model_version),
        ("mode", report.mode),
        ("prefixes", ", ".join(report.prefixes) or "-"),
        ("objects listed", report.listed),
        ("new images", report.new),
        ("scored", report.scored),
        ("failed", report.failed),
    ]
    rows += [(f"failed: {reason}", n) for reason, n in sorted(report.failed_by_reason.items())]
    rows += [(f"skipped: {reason}", n) for reason, n in sorted(report.skipped.items())]
    rows += [
        ("retired (gone from the store)", report.retired),
        ("not retired (over the fraction)", report.retire_refused),
    ]
    rows.append(("drift", report.drift_status))
    rows += [
        ("images/s", round(report.images_per_second, 2)),
        ("seconds", round(report.seconds, 1)),
    ]
    return [{"figure": figure, "value": value} for figure, value in rows]


def score_summary(report: ScoreReport) -> Document:
    """What ``mlc score`` prints: the counts, each failure and skip reason, warnings."""
    document = Document(
        f"listed {report.listed} objects, {report.new} new images; scored {report.scored}, "
        f"failed {report.failed} with model {report.model_version} "
        f"({report.images_per_second:.1f} images/s)"
    )
    for reason, count in sorted(report.failed_by_reason.items()):
        document.add(f"  failed: {count} x {reason}")
    for reason, count in sorted(report.skipped.items()):
        document.add(f"  skipped: {count} x {reason}")
    if report.retired:
        document.add(f"  retired: {report.retired} images gone from the store")
    if report.left_to_other_runs:
        document.add(f"  left {report.left_to_other_runs} images to the live runs that hold them")
    if report.dead_runs_ended:
        document.add(
            f"  took over the images of runs {report.dead_runs_ended}, which stopped without "
            "finishing"
        )
    if report.drift:
        document.add(f"drift: {report.drift_status}")
    for warning in report.warnings:
        document.add(f"warning: {warning}")
    return document


def retag_summary(report: RetagReport) -> Document:
    return Document(
        f"{report.model_version}: tags changed on {report.changed} of {report.images} images "
        f"({report.tags_added} added, {report.tags_removed} removed) with thresholds "
        f"{', '.join(f'{t:.3f}' for t in report.thresholds)}"
    )


def labels_import_summary(report: LabelImportReport) -> Document:
    document = Document(
        f"imported labels for {report.imported_images} images ({report.positive_labels} "
        f"positive, {report.negative_labels} negative) from {report.rows} rows"
    )
    if report.blank_corrections:
        document.add(f"  {report.blank_corrections} corrections row(s) named no tag and were left")
    for kind, count in sorted(report.problem_counts.items()):
        document.add(f"  {count} row(s) with problem '{kind}'")
    return document


def nightly_report(outcome: NightlyOutcome) -> Document:
    """What a nightly run did: its scoring, its retrain decision and the retrain's outcome."""
    document = Document("Nightly run").add(Heading("Scoring"))
    if outcome.scoring is None:
        document.add(f"Skipped: {outcome.skipped_scoring or 'no reason given'}")
    else:
        document.add(
            Table(
                ["figure", "value"],
                [[row["figure"], row["value"]] for row in score_summary_rows(outcome.scoring)],
            )
        )
    decision = outcome.decision
    document.add(
        Heading("Retraining"),
        f"**{'Retrained' if decision.retrain else 'Not retrained'}:** {decision.reason}",
    )
    if outcome.retrain is not None:
        training = outcome.retrain.training
        document.add(
            f"Model {training.version} is {training.status}: {training.decision} "
            f"(report: `{RETRAIN_REPORT_KEY}`)."
        )
    return document
