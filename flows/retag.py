"""Flow: recompute stored tag sets from stored probabilities after thresholds change."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.common import opened_workspace
from flows.progress import ProgressRelay
from mlc_core.jobs.retag import DEFAULT_BATCH_SIZE, RetagReport, retag_images


@flow(name="mlc-retag")
def retag_flow(version: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> RetagReport:
    """Make a model version's stored tag sets match its current thresholds; no inference.

    Args:
        version: the model version, e.g. "v3"; empty: the champion.
        batch_size: score rows per page and per database transaction.
    """
    logger = get_run_logger()
    relay = ProgressRelay(
        "retag",
        lambda p: logger.info(
            "re-tagged %d/%d images (%d changed), %.0f images/s",
            p.done,
            p.total,
            p.changed,
            p.images_per_second,
        ),
    )
    with opened_workspace() as workspace:
        report = retag_images(workspace, version=version, batch_size=batch_size, on_progress=relay)
    logger.info(
        "%s: %d of %d images changed (%d tags added, %d removed) in %.1f s",
        report.model_version,
        report.changed,
        report.images,
        report.tags_added,
        report.tags_removed,
        report.seconds,
    )
    return report
