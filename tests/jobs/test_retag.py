"""Re-tagging recomputes stored tag sets from stored probabilities after thresholds change,
without inference."""

from __future__ import annotations

import json

import pytest

from mlc_core.db.model_versions import get_model_version, override_threshold
from mlc_core.errors import ModelError, NoChampionModel
from mlc_core.jobs.retag import retag_images
from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.workspace import Workspace
from tests.jobs.scoring_support import (
    CLASSES,
    put_tiny_images,
    query,
    register_champion,
)

IMAGES = 12
SCORING = {"batch_size": 4}


@pytest.fixture
def workspace(embedded_workspace: Workspace) -> Workspace:
    return embedded_workspace


@pytest.fixture
def scored(workspace: Workspace) -> Workspace:
    """Twelve images scored by champion v1 with thresholds of 0.5."""
    register_champion(workspace)
    put_tiny_images(workspace, IMAGES)
    score_images(workspace)
    return workspace


def _set_threshold(workspace: Workspace, version: str, class_name: str, value: float) -> None:
    with workspace.transaction() as session:
        model_version = get_model_version(session, version)
        assert model_version is not None
        override_threshold(session, model_version, class_name, value)


def _tag_sets(workspace: Workspace) -> dict[str, set[str]]:
    tags: dict[str, set[str]] = {}
    for uri, tag in query(workspace, "select image_uri, tag from current_tags"):
        tags.setdefault(uri, set()).add(tag)
    return tags


def _expected_tag_sets(workspace: Workspace, thresholds: list[float]) -> dict[str, set[str]]:
    expected: dict[str, set[str]] = {}
    for uri, probabilities in query(
        workspace,
        "select images.uri, scores.probabilities from scores "
        "join images on images.id = scores.image_id",
    ):
        values = probabilities if isinstance(probabilities, list) else json.loads(probabilities)
        names = {c for c, p, t in zip(CLASSES, values, thresholds, strict=True) if p >= t}
        if names:
            expected[uri] = names
    return expected


def test_retag_after_a_threshold_change_recomputes_the_tags_without_inference(
    scored: Workspace,
) -> None:
    before = _tag_sets(scored)
    _set_threshold(scored, "v1", "circle", 1.0)
    _set_threshold(scored, "v1", "ring", 0.001)
    # Re-tagging must not need the model: without its file, inference would fail.
    scored.store.delete("models/v1/model.keras")

    report = retag_images(scored)

    thresholds = [1.0, 0.5, 0.001, 0.5, 0.5]
    after = _tag_sets(scored)
    assert after == _expected_tag_sets(scored, thresholds)
    assert all("ring" in tags and "circle" not in tags for tags in after.values())
    assert (report.model_version, report.images, report.thresholds) == ("v1", IMAGES, thresholds)
    uris = set(before) | set(after)
    assert report.changed == sum(before.get(u, set()) != after.get(u, set()) for u in uris)
    assert report.tags_added == sum(len(after.get(u, set()) - before.get(u, set())) for u in uris)
    assert report.tags_removed == sum(len(before.get(u, set()) - after.get(u, set())) for u in uris)
    assert report.changed > 0


def test_retag_with_unchanged_thresholds_changes_nothing(scored: Workspace) -> None:
    before = _tag_sets(scored)

    report = retag_images(scored, batch_size=5)

    assert (report.images, report.changed, report.tags_added, report.tags_removed) == (
        IMAGES,
        0,
        0,
        0,
    )
    assert _tag_sets(scored) == before


def test_retag_of_a_named_version_leaves_the_other_versions_alone(scored: Workspace) -> None:
    register_champion(scored, "v2")
    score_images(scored, mode="stale")
    _set_threshold(scored, "v1", "circle", 0.001)
    _set_threshold(scored, "v2", "circle", 0.001)
    v2_tags_before = query(
        scored,
        "select count(*) from image_tags join model_versions on model_versions.id = "
        "image_tags.model_version_id where model_versions.version = 'v2'",
    )

    report = retag_images(scored, version="v1")

    assert report.model_version == "v1"
    assert (
        query(
            scored,
            "select count(*) from image_tags join model_versions on model_versions.id = "
            "image_tags.model_version_id where model_versions.version = 'v2'",
        )
        == v2_tags_before
    )
    assert query(
        scored,
        "select count(distinct image_id) from image_tags join model_versions on "
        "model_versions.id = image_tags.model_version_id "
        "where model_versions.version = 'v1' and tag = 'circle'",
    ) == [(IMAGES,)]


def test_retag_records_a_run_with_its_counts(scored: Workspace) -> None:
    _set_threshold(scored, "v1", "cross", 0.001)

    report = retag_images(scored)

    [(kind, status, counts)] = query(
        scored, "select kind, status, counts from runs where id = :id", id=report.run_id
    )
    counts = counts if isinstance(counts, dict) else json.loads(counts)
    assert (kind, status, counts["images"], counts["changed"]) == (
        "retag",
        "succeeded",
        IMAGES,
        report.changed,
    )


def test_retag_of_an_unknown_version_names_it(scored: Workspace) -> None:
    with pytest.raises(ModelError, match="there is no model version 'v9'; `mlc models` lists"):
        retag_images(scored, version="v9")


def test_retag_without_a_champion_says_train_first(workspace: Workspace) -> None:
    with pytest.raises(NoChampionModel, match="mlc train"):
        retag_images(workspace)
