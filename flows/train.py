"""Flow: train a model version from the stored labels and promote it if it is better."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.common import opened_workspace
from flows.progress import ProgressRelay
from mlc_core.jobs.training.report import TrainingReport
from mlc_core.jobs.training.train import train_model_version


@flow(name="mlc-train")
def train_flow(
    epochs: int | None = None,
    backbone: str | None = None,
    image_size: int | None = None,
    time_budget_minutes: float | None = None,
    semi_supervised: bool | None = None,
    min_crop_fraction: float | None = None,
    mixup_alpha: float | None = None,
) -> TrainingReport:
    """Train, evaluate and register a new model version.

    Args:
        epochs: maximum epochs (early stopping may end sooner); default from settings.
        backbone: backbone name from the registry; default from settings.
        image_size: square input side in pixels; default from settings.
        time_budget_minutes: the most training may take; default from settings.
        semi_supervised: learn from unlabelled images too; default from settings.
        min_crop_fraction: smallest side of a training crop; default from settings.
        mixup_alpha: mixup strength; default from settings.
    """
    logger = get_run_logger()
    with opened_workspace() as workspace:
        overrides = {
            name: value
            for name, value in (
                ("epochs", epochs),
                ("backbone", backbone),
                ("image_size", image_size),
                ("time_budget_minutes", time_budget_minutes),
                ("semi_supervised", semi_supervised),
                ("min_crop_fraction", min_crop_fraction),
                ("mixup_alpha", mixup_alpha),
            )
            if value is not None
        }
        settings = workspace.settings.training.model_copy(update=overrides)
        relay = ProgressRelay(
            "epoch",
            lambda e: logger.info(
                "%sepoch %d/%d: loss %.4f, validation mAP %s",
                f"{e.model}, " if e.model else "",
                e.epoch,
                e.epochs,
                e.loss,
                "-" if e.validation_map is None else f"{e.validation_map:.4f}",
            ),
            interval=0,
        )
        report = train_model_version(workspace, settings, on_epoch_end=relay)
    logger.info(
        "model %s is %s: %s (test mAP %s)",
        report.version,
        report.status,
        report.decision,
        _rounded(report.metrics.get("mean_average_precision")),
    )
    return report


def _rounded(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
