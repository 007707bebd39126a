"""Reports shaped like the ones the train and score jobs return, for rendering tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mlc_core.jobs.labels_import import LabelImportReport, LabelProblem
from mlc_core.jobs.scoring.reports import ScoreReport
from mlc_core.jobs.training.report import ChampionComparison, TrainingReport

METRICS = {
    "mean_average_precision": 0.85,
    "average_precision": {"circle": 0.9, "square": 0.8},
    "micro_f1": 0.8,
    "macro_f1": 0.78,
    "hamming_loss": 0.1,
    "subset_accuracy": 0.6,
    "num_images": 12,
    "support": {"circle": 6, "square": 5},
}


def training_report(**changes: Any) -> TrainingReport:
    report = TrainingReport(
        version="v2",
        status="champion",
        decision="promoted: test mAP 0.850 beats the champion's 0.700 by more than 0.005",
        classes=["circle", "square"],
        thresholds=[0.41, 0.55],
        metrics=METRICS,
        champion_comparison=ChampionComparison(
            champion_version="v1",
            images=10,
            candidate=METRICS,
            champion={
                "mean_average_precision": 0.7,
                "average_precision": {"circle": 0.75, "square": 0.65},
            },
        ),
        left_out_classes={"star": 1},
        threshold_notes=["square: no threshold reached F1 above 0; kept 0.5"],
        labelled_images=80,
        missing_images=2,
        unreadable_images={"images/bad.jpg": "truncated"},
        split_sizes={"train": 56, "validation": 12, "test": 12},
        epochs_run=7,
        best_epoch=5,
        training_seconds=12.5,
        artifact_uri="file:///store/models/v2/model.keras",
    )
    return replace(report, **changes)


def score_report(**changes: Any) -> ScoreReport:
    report = ScoreReport(
        model_version="v2",
        mode="new",
        prefixes=["images/"],
        listed=120,
        new=100,
        scored=97,
        failed=3,
        failed_by_reason={"truncated_image": 2, "not_an_image": 1},
        skipped={"not_an_image_type": 20},
        # 100 images done in this time: 48.25 images/s.
        seconds=100 / 48.25,
    )
    return replace(report, **changes)


def labels_report(rows: int, imported_images: int, unknown_keys: int) -> LabelImportReport:
    return LabelImportReport(
        rows=rows,
        imported_images=imported_images,
        problems=[
            LabelProblem(line, "unknown_key", f"images/{line}.jpg does not exist")
            for line in range(2, 2 + unknown_keys)
        ],
    )
