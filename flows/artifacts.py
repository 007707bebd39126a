"""Prefect artifacts: what a run did, where people look for it (the run page and Artifacts page).

Keys are stable, so the Artifacts page shows each key's history run after run:

- ``mlc-retrain-report``  markdown: per-class AP and thresholds, champion vs candidate, the
  promotion decision and its reason.
- ``mlc-score-summary``   table: listed, new, scored, failed by reason, images/s, model version.
- ``mlc-score-progress``  progress (percent) while a scoring run works.
- ``mlc-nightly-report``  markdown: what the nightly run scored and why it retrained or not.

The builders (``*_markdown``, ``*_rows``) are plain functions of the report dicts the flows
return; the ``publish_*`` functions send them to Prefect and must run inside a flow or task run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, cast
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

RETRAIN_REPORT_KEY = "mlc-retrain-report"
SCORE_SUMMARY_KEY = "mlc-score-summary"
SCORE_PROGRESS_KEY = "mlc-score-progress"
NIGHTLY_REPORT_KEY = "mlc-nightly-report"


def _number(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _metrics_line(metrics: dict[str, Any]) -> str:
    return (
        f"mAP **{_number(metrics.get('mean_average_precision'))}** · "
        f"micro-F1 {_number(metrics.get('micro_f1'))} · "
        f"macro-F1 {_number(metrics.get('macro_f1'))} · "
        f"Hamming loss {_number(metrics.get('hamming_loss'))} · "
        f"exact match {_number(metrics.get('subset_accuracy'))}"
    )


def _comparison_section(training: dict[str, Any]) -> list[str]:
    version = training["version"]
    comparison = training.get("champion_comparison")
    if not comparison:
        if training["status"] == "champion":
            return ["There was no champion to compare with: the candidate became the first one."]
        return ["The champion had no stored test split; the candidate was judged on its own."]
    champion_version = comparison["champion_version"]
    champion, candidate = comparison["champion"], comparison["candidate"]
    champion_ap = champion.get("average_precision", {})
    candidate_ap = candidate.get("average_precision", {})
    rows: list[list[str]] = []
    for name in sorted(set(champion_ap) | set(candidate_ap)):
        old, new = champion_ap.get(name), candidate_ap.get(name)
        change = f"{new - old:+.3f}" if old is not None and new is not None else "-"
        rows.append([name, _number(old), _number(new), change])
    old_map = champion.get("mean_average_precision")
    new_map = candidate.get("mean_average_precision")
    change = f"{new_map - old_map:+.3f}" if old_map is not None and new_map is not None else "-"
    rows.append(["**mAP**", _number(old_map), _number(new_map), f"**{change}**"])
    return [
        f"On the {comparison['images']} test images of the champion {champion_version}:",
        "",
        *_table(
            ["class", f"champion {champion_version} AP", f"candidate {version} AP", "change"], rows
        ),
    ]


def retrain_report_markdown(
    training: dict[str, Any], *, labels: dict[str, Any] | None = None
) -> str:
    """The retrain report as markdown.

    Args:
        training: the dict ``flows.train.train_flow`` returns (``TrainingReport.as_dict()``).
        labels: the dict ``flows.labels.import_labels_flow`` returned, if the run imported a
            labels manifest first.
    """
    version, status = training["version"], training["status"]
    metrics = training["metrics"]
    verdict = "is the new champion" if status == "champion" else f"stays a {status}"
    split = training.get("split_sizes", {})
    facts = [
        [
            "labelled images",
            f"{training.get('labelled_images', '-')} "
            f"({training.get('missing_images', 0)} missing from the store, "
            f"{len(training.get('unreadable_images', {}))} unreadable)",
        ],
        [
            "split (train / validation / test)",
            " / ".join(str(split.get(name, "-")) for name in ("train", "validation", "test")),
        ],
        [
            "epochs",
            f"{training.get('epochs_run', '-')} (best {training.get('best_epoch', '-')}), "
            f"{_number(training.get('training_seconds'), 1)} s",
        ],
    ]
    if labels is not None:
        problems = sum(labels.get("problem_counts", {}).values())
        facts.append(
            [
                "labels imported",
                f"{labels['imported_images']} images from {labels.get('rows', '-')} rows "
                f"({problems} problem rows)",
            ]
        )
    support = metrics.get("support", {})
    per_class = [
        [
            name,
            _number(metrics.get("average_precision", {}).get(name)),
            _number(threshold),
            support.get(name, "-"),
        ]
        for name, threshold in zip(training["classes"], training["thresholds"], strict=True)
    ]
    lines = [
        f"# Retrain: {version} {verdict}",
        "",
        f"**Decision:** {training['decision']}",
        "",
        *_table(["data and training", ""], facts),
        "",
        f"## {version} per class (its test split, {metrics.get('num_images', '-')} images)",
        "",
        *_table(["class", "AP", "threshold", "positives"], per_class),
        "",
        _metrics_line(metrics),
        "",
        "## Champion vs candidate",
        "",
        *_comparison_section(training),
    ]
    left_out = training.get("left_out_classes") or {}
    if left_out:
        lines += [
            "",
            "## Left out (too few positive images)",
            "",
            ", ".join(f"{name} ({count})" for name, count in left_out.items()),
        ]
    notes = training.get("threshold_notes") or []
    if notes:
        lines += ["", "## Threshold notes", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def publish_retrain_report(
    training: dict[str, Any], *, labels: dict[str, Any] | None = None
) -> UUID:
    """Publish the retrain report under ``mlc-retrain-report``; returns the artifact id."""
    artifact_id = create_markdown_artifact(
        markdown=retrain_report_markdown(training, labels=labels),
        key=RETRAIN_REPORT_KEY,
        description=f"retrain: {training['version']} {training['status']}",
    )
    return cast(UUID, artifact_id)


def score_summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The score summary as a two-column table (one row per figure, one per failure reason).

    Args:
        report: the dict ``flows.score.score_flow`` returns (``ScoreReport.as_dict()``).
    """
    rows: list[tuple[str, Any]] = [
        ("model version", report["model_version"]),
        ("mode", report.get("mode", "-")),
        ("prefixes", ", ".join(report.get("prefixes") or []) or "-"),
        ("objects listed", report["listed"]),
        ("new images", report["new"]),
        ("scored", report["scored"]),
        ("failed", report["failed"]),
    ]
    rows += [
        (f"failed: {reason}", count)
        for reason, count in sorted(report.get("failed_by_reason", {}).items())
    ]
    rows += [
        (f"skipped: {reason}", count) for reason, count in sorted(report.get("skipped", {}).items())
    ]
    rows += [
        ("images/s", round(float(report["images_per_second"]), 2)),
        ("seconds", round(float(report.get("seconds", 0.0)), 1)),
    ]
    return [{"figure": figure, "value": value} for figure, value in rows]


def publish_score_summary(report: dict[str, Any]) -> UUID:
    """Publish the score summary under ``mlc-score-summary``; returns the artifact id."""
    artifact_id = create_table_artifact(
        table=score_summary_rows(report),
        key=SCORE_SUMMARY_KEY,
        description=(
            f"score ({report.get('mode', 'new')}): {report['scored']} scored, "
            f"{report['failed']} failed with {report['model_version']}"
        ),
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


def nightly_report_markdown(
    scoring: dict[str, Any] | None,
    decision: dict[str, Any],
    retrain: dict[str, Any] | None,
    *,
    skipped_scoring: str | None = None,
) -> str:
    """What a nightly run did: its scoring, its retrain decision and the retrain's outcome.

    Args:
        scoring: the score flow's report, or ``None`` when scoring was skipped.
        decision: ``RetrainDecision.as_dict()``.
        retrain: the retrain flow's result, or ``None`` when it did not retrain.
        skipped_scoring: why scoring was skipped, when it was.
    """
    lines = ["# Nightly run", "", "## Scoring", ""]
    if scoring is None:
        lines.append(f"Skipped: {skipped_scoring or 'no reason given'}")
    else:
        lines += _table(
            ["figure", "value"],
            ([row["figure"], row["value"]] for row in score_summary_rows(scoring)),
        )
    lines += [
        "",
        "## Retraining",
        "",
        f"**{'Retrained' if decision['retrain'] else 'Not retrained'}:** {decision['reason']}",
    ]
    if retrain is not None:
        training = retrain["training"]
        lines += [
            "",
            f"Model {training['version']} is {training['status']}: {training['decision']} "
            f"(report: `{RETRAIN_REPORT_KEY}`).",
        ]
    return "\n".join(lines) + "\n"


def publish_nightly_report(
    scoring: dict[str, Any] | None,
    decision: dict[str, Any],
    retrain: dict[str, Any] | None,
    *,
    skipped_scoring: str | None = None,
) -> UUID:
    """Publish the nightly report under ``mlc-nightly-report``; returns the artifact id."""
    artifact_id = create_markdown_artifact(
        markdown=nightly_report_markdown(
            scoring, decision, retrain, skipped_scoring=skipped_scoring
        ),
        key=NIGHTLY_REPORT_KEY,
        description="nightly: " + ("retrained" if decision["retrain"] else "scored only"),
    )
    return cast(UUID, artifact_id)
