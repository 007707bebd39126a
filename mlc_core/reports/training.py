"""How a training run and a retrain read to people: the CLI's summary and the retrain artifact."""

from __future__ import annotations

from typing import Any

from mlc_core.jobs.labels_import import LabelImportReport
from mlc_core.jobs.training.report import ChampionComparison, TrainingReport
from mlc_core.reports.document import Bullets, Document, Heading, Table, number


def metrics_line(metrics: dict[str, Any]) -> str:
    """The headline metrics of one evaluation, in one line."""
    return (
        f"mAP **{number(metrics.get('mean_average_precision'))}** · "
        f"micro-F1 {number(metrics.get('micro_f1'))} · "
        f"macro-F1 {number(metrics.get('macro_f1'))} · "
        f"Hamming loss {number(metrics.get('hamming_loss'))} · "
        f"exact match {number(metrics.get('subset_accuracy'))}"
    )


def _per_class(report: TrainingReport) -> Table:
    metrics = report.metrics
    support = metrics.get("support", {})
    return Table(
        ["class", "AP", "threshold", "positives"],
        [
            [
                name,
                number(metrics.get("average_precision", {}).get(name)),
                number(threshold),
                support.get(name, "-"),
            ]
            for name, threshold in zip(report.classes, report.thresholds, strict=True)
        ],
    )


def training_summary(report: TrainingReport) -> Document:
    """What ``mlc train`` prints: the verdict, the test split per class, the headline metrics."""
    document = Document(f"model {report.version} is {report.status}: {report.decision}")
    if report.left_out_classes:
        document.add(f"left out (too few positives): {report.left_out_classes}")
    if report.unreadable_images:
        document.add(f"skipped {len(report.unreadable_images)} unreadable labelled images")
    if report.budget_seconds is not None:
        document.add(f"time: {_time_line(report)}")
    if report.semi_supervised.get("used_images") is not None or "no unlabelled" in str(
        report.semi_supervised.get("note", "")
    ):
        document.add(f"unlabelled images: {_semi_line(report.semi_supervised)}")
    table = _per_class(report)
    test_images = report.split_sizes.get("test", "-")
    return document.add(
        Table(table.header, table.rows, title=f"test split ({test_images} images)"),
        metrics_line(report.metrics),
    )


def _comparison_blocks(report: TrainingReport) -> list[str | Table]:
    comparison: ChampionComparison | None = report.champion_comparison
    if comparison is None:
        if report.status == "champion":
            return ["There was no champion to compare with: the candidate became the first one."]
        return ["The champion had no stored test split; the candidate was judged on its own."]
    champion_ap = comparison.champion.get("average_precision", {})
    candidate_ap = comparison.candidate.get("average_precision", {})
    rows: list[list[str]] = []
    for name in sorted(set(champion_ap) | set(candidate_ap)):
        rows.append([name, *_change(champion_ap.get(name), candidate_ap.get(name))])
    old = comparison.champion.get("mean_average_precision")
    new = comparison.candidate.get("mean_average_precision")
    before, after, change = _change(old, new)
    rows.append(["**mAP**", before, after, f"**{change}**"])
    champion = comparison.champion_version
    return [
        f"On the {comparison.images} test images of the champion {champion}:",
        Table(
            ["class", f"champion {champion} AP", f"candidate {report.version} AP", "change"], rows
        ),
    ]


def _change(old: float | None, new: float | None) -> list[str]:
    change = f"{new - old:+.3f}" if old is not None and new is not None else "-"
    return [number(old), number(new), change]


def _semi_line(semi: dict[str, Any]) -> str:
    """What the unlabelled images contributed, or why none did."""
    if "used_images" not in semi:
        return str(semi.get("note", "semi-supervised training is off"))
    line = (
        f"{semi['used_images']} of {semi['unlabelled_images']} pseudo-labelled by "
        f"{semi['teacher']} (classes: {', '.join(semi['pseudo_labelled_classes']) or 'none'})"
    )
    if semi.get("rounds", 1) > 1:
        line += f"; {semi['rounds']} students in turn, each taught by the one before"
    if semi.get("classes_without_teacher"):
        line += f"; the teacher does not know {', '.join(semi['classes_without_teacher'])}"
    if semi.get("note"):
        line += f"; {semi['note']}"
    return line


def _time_line(report: TrainingReport) -> str:
    """Planned against used time: what a schedule relying on the budget needs to see."""
    used = f"used {number(report.training_seconds, 0)} s"
    if report.budget_seconds is None:
        return f"{used}, no time budget ({report.planned_epochs} epochs planned)"
    end = "stopped at the budget" if report.stopped_at_budget else "finished within it"
    return (
        f"{used} of a {number(report.budget_seconds, 0)} s budget "
        f"({report.planned_epochs} epochs planned to fit it, {end})"
    )


def retrain_report(report: TrainingReport, *, labels: LabelImportReport | None = None) -> Document:
    """The retrain artifact: per-class AP and thresholds, champion vs. candidate, the decision."""
    verdict = "is the new champion" if report.status == "champion" else f"stays a {report.status}"
    split = report.split_sizes
    facts = [
        [
            "labelled images",
            f"{report.labelled_images} ({report.missing_images} missing from the store, "
            f"{len(report.unreadable_images)} unreadable)",
        ],
        [
            "split (train / validation / test)",
            " / ".join(str(split.get(name, "-")) for name in ("train", "validation", "test")),
        ],
        [
            "epochs",
            f"{report.epochs_run} (best {report.best_epoch}), "
            f"{number(report.training_seconds, 1)} s",
        ],
        ["time", _time_line(report)],
        ["unlabelled images", _semi_line(report.semi_supervised)],
    ]
    if labels is not None:
        problems = sum(labels.problem_counts.values())
        facts.append(
            [
                "labels imported",
                f"{labels.imported_images} images from {labels.rows} rows "
                f"({problems} problem rows)",
            ]
        )
    document = Document(f"Retrain: {report.version} {verdict}").add(
        f"**Decision:** {report.decision}",
        Table(["data and training", ""], facts),
        Heading(
            f"{report.version} per class (its test split, "
            f"{report.metrics.get('num_images', '-')} images)"
        ),
        _per_class(report),
        metrics_line(report.metrics),
        Heading("Champion vs candidate"),
        *_comparison_blocks(report),
    )
    if report.left_out_classes:
        document.add(
            Heading("Left out (too few positive images)"),
            ", ".join(f"{name} ({count})" for name, count in report.left_out_classes.items()),
        )
    if report.threshold_notes:
        document.add(Heading("Threshold notes"), Bullets(report.threshold_notes))
    return document
