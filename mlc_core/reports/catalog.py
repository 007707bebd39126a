"""How the stored state reads to people: model versions, thresholds, the demo's hold-out."""

from __future__ import annotations

from collections.abc import Sequence

from mlc_core.db.models import ModelVersion
from mlc_core.jobs.demo import DemoEvaluation
from mlc_core.reports.document import Document, Table, number


def model_versions_table(versions: Sequence[ModelVersion]) -> Document:
    """``mlc models``: each version with its status, backbone, classes, test mAP, decision."""
    rows = [
        [
            version.version,
            version.status,
            version.created_at.strftime("%Y-%m-%d %H:%M"),
            f"{version.backbone} {version.image_size}px",
            ", ".join(version.classes),
            number(version.metrics.get("mean_average_precision")),
            version.decision or "",
        ]
        for version in versions
    ]
    return Document("model versions").add(
        Table(["version", "status", "created", "backbone", "classes", "test mAP", "decision"], rows)
    )


def thresholds_table(version: ModelVersion) -> Document:
    """``mlc thresholds VERSION``: each class's threshold, and any override by hand."""
    overrides = version.threshold_overrides or {}
    rows = []
    for name, threshold in zip(version.classes, version.thresholds, strict=True):
        note = overrides.get(name)
        rows.append(
            [
                name,
                f"{threshold:.3f}",
                f"set {note['set_at'][:16]} (calibrated {note['calibrated']:.3f})" if note else "",
            ]
        )
    return Document(f"thresholds of {version.version}").add(
        Table(["class", "threshold", "override"], rows)
    )


def holdout_summary(evaluation: DemoEvaluation) -> Document:
    """The demo's check on the images it never labelled."""
    metrics = evaluation.metrics
    document = Document(
        f"hold-out: {evaluation.images} images never labelled, model {evaluation.model_version}"
    ).add(
        Table(
            ["class", "average precision"],
            [[name, number(ap)] for name, ap in metrics["average_precision"].items()],
        ),
        f"hold-out mAP: {number(metrics['mean_average_precision'])}",
    )
    for example in evaluation.examples:
        probabilities = ", ".join(f"{k} {v:.2f}" for k, v in example.probabilities.items())
        document.add(
            f"  {example.key}: tags {sorted(example.tags)} (truth {example.true_tags}); "
            f"{probabilities}"
        )
    return document
