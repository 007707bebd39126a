"""A candidate trained at another image size than the champion is still judged fairly."""

from __future__ import annotations

import pytest

from mlc_core.jobs.training.train import train_model_version
from tests.jobs.conftest import TrainedWorkspace


def test_a_candidate_at_another_image_size_is_compared_with_the_champion_at_its_own_size(
    trained: TrainedWorkspace,
) -> None:
    workspace = trained.workspace
    champion_size = workspace.settings.training.image_size
    larger = workspace.settings.training.model_copy(update={"image_size": champion_size + 16})

    report = train_model_version(workspace, larger)

    comparison = report.champion_comparison
    assert comparison is not None and comparison.champion_version == trained.report.version
    assert comparison.images > 0
    # The champion, scoring images decoded at its own size, gets the metrics it got when it
    # was trained on the same test images.
    assert comparison.champion["mean_average_precision"] == pytest.approx(
        trained.report.metrics["mean_average_precision"]
    )
