"""Flow: score new images in the store with the champion model."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.artifacts import ScoreProgressArtifact, publish_score_summary
from flows.common import opened_workspace
from flows.execution import scoring_slots
from flows.progress import ProgressRelay
from mlc_core.jobs.score import ScoreProgress, score_images
from mlc_core.settings import load_settings

ScoreModeParameter = Literal["new", "stale", "all", "failed"]


@flow(name="mlc-score")
def score_flow(
    prefixes: list[str] | None = None,
    mode: ScoreModeParameter = "new",
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Score images under ``prefixes`` (default: the images prefix) with the champion.

    Args:
        prefixes: key prefixes in the store to score.
        mode: new (not yet scored by the champion), stale (scored only by older models), all,
            or failed (retry images that failed before).
        batch_size: images per inference batch and per database transaction.
    """
    logger = get_run_logger()
    relay = ProgressRelay(
        "score",
        lambda p: logger.info(
            "scored %d/%d images (%d failed), %.1f images/s",
            p.done,
            p.total,
            p.failed,
            p.images_per_second,
        ),
    )
    chosen = prefixes or [load_settings().images_prefix]
    artifact = ScoreProgressArtifact(f"scoring {', '.join(chosen)} ({mode})")

    def on_progress(event: ScoreProgress) -> None:
        relay(event)
        artifact(event)

    # One run per prefix at a time, however it was started (schedule, UI, CLI, nightly).
    with scoring_slots(chosen), opened_workspace() as workspace:
        report = score_images(
            workspace, prefixes=chosen, mode=mode, batch_size=batch_size, on_progress=on_progress
        )
    artifact.finish()
    publish_score_summary(report.as_dict())
    for warning in report.warnings:
        logger.warning("%s", warning)
    if report.dead_runs_ended:
        logger.warning(
            "took over the images of scoring runs %s, which stopped without finishing",
            report.dead_runs_ended,
        )
    logger.info(
        "listed %d objects, %d new images, scored %d, failed %d %s, skipped %s with model %s "
        "(%.1f images/s)",
        report.listed,
        report.new,
        report.scored,
        report.failed,
        report.failed_by_reason or "",
        report.skipped or "none",
        report.model_version,
        report.images_per_second,
    )
    return report.as_dict()
