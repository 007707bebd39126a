"""A candidate trained at another image size than the champion is still judged fairly."""

from __future__ import annotations

import json

import pytest

from mlc_core.db.model_versions import promote_model_version, require_model_version
from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.training.train import train_model_version
from mlc_core.model.artifacts import deserialize_model
from mlc_core.model.build import model_image_size
from mlc_core.storage import key_for_uri
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


def test_a_model_trained_small_is_registered_and_scores_at_its_larger_scoring_size(
    trained: TrainedWorkspace,
) -> None:
    workspace = trained.workspace
    settings = workspace.settings.training.model_copy(
        update={"image_size": 64, "scoring_scale": 2.0, "promotion_margin": 0.0}
    )

    report = train_model_version(workspace, settings)

    store = workspace.store
    with workspace.transaction() as session:
        version = require_model_version(session, report.version)
        assert version.image_size == 128
        promote_model_version(session, version, "test: score with it")
        card_key = key_for_uri(store, version.card_uri)
        model_key = key_for_uri(store, version.artifact_uri)
        sha256 = version.artifact_sha256
    assert card_key is not None and model_key is not None
    card = json.loads(store.get(card_key))
    assert card["image_size"] == 128
    assert card["extra"]["trained_at_image_size"] == 64
    # The stored model works at 128 px, and scoring decodes the images at that size.
    assert model_image_size(deserialize_model(store.get(model_key), sha256)) == 128
    scored = score_images(workspace, mode="all")
    assert scored.scored == len(trained.truth) and scored.failed == 0
