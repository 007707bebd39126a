"""The first real path on the embedded defaults: labels -> train -> score -> tags."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from mlc_core.db.model_versions import get_champion, list_model_versions
from mlc_core.db.tag_search import TagQuery, search_tags
from mlc_core.errors import NoChampionModel, TrainingDataError
from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.training.train import train_model_version
from mlc_core.jobs.workspace import Workspace
from tests.jobs.conftest import TrainedWorkspace, model_files


def test_scoring_before_any_model_exists_says_train_first(workspace: Workspace) -> None:
    with pytest.raises(NoChampionModel, match="mlc train"):
        score_images(workspace)


def test_training_without_labels_stops_before_writing_anything(workspace: Workspace) -> None:
    with pytest.raises(TrainingDataError, match="mlc labels import"):
        train_model_version(workspace, workspace.settings.training)
    with workspace.transaction() as session:
        assert list_model_versions(session) == []
    assert list(workspace.store.iter_objects("models/")) == []


def test_first_model_becomes_champion_and_its_files_are_in_the_store(
    trained: TrainedWorkspace,
) -> None:
    workspace, report = trained.workspace, trained.report
    assert report.version == "v1" and report.status == "champion"
    assert report.classes == ["circle", "cross", "ring", "square", "triangle"]
    assert len(report.thresholds) == 5
    files = model_files(workspace, "v1")
    assert files.model.startswith("models/v1-")
    assert workspace.store.exists(files.model)
    assert workspace.store.exists(files.card)
    with workspace.transaction() as session:
        champion = get_champion(session)
        assert champion is not None
        rates = champion.metrics["validation_tag_rates"]
    assert sorted(rates) == report.classes and all(0 <= rate <= 1 for rate in rates.values())


def test_score_writes_probabilities_and_tags_then_a_rerun_scores_nothing(
    trained: TrainedWorkspace,
) -> None:
    workspace, truth = trained.workspace, trained.truth
    first = score_images(workspace)
    assert (first.scored, first.failed, first.new) == (len(truth), 0, len(truth))
    again = score_images(workspace)
    assert (again.scored, again.new, again.pending) == (0, 0, 0)
    with workspace.engine.connect() as connection:
        rows = connection.execute(text("select count(*) from current_scores")).scalar_one()
        assert rows == len(truth) * 5
        tagged = connection.execute(
            text("select count(distinct image_uri) from current_tags")
        ).scalar_one()
    assert tagged > 0
    with workspace.transaction() as session:
        champion = get_champion(session)
        assert champion is not None
        some_tag = champion.classes[0]
        found = search_tags(session, TagQuery(all_tags=(some_tag,)))
    assert all(some_tag in [t.tag for t in image.tags] for image in found)


def test_a_corrupt_image_is_recorded_and_the_rest_are_scored(trained: TrainedWorkspace) -> None:
    workspace, truth = trained.workspace, trained.truth
    workspace.store.put("images/broken.jpg", b"<html>502 Bad Gateway</html>")
    workspace.store.put("images/notes.txt", b"not an image type")
    report = score_images(workspace)
    assert report.scored == len(truth) and report.failed == 1
    assert report.skipped == {"not_an_image_type": 1}
    with workspace.engine.connect() as connection:
        failures = connection.execute(text("select image_uri, error from scoring_failures")).all()
    assert len(failures) == 1 and failures[0][0].endswith("images/broken.jpg")
    assert "HTML" in failures[0][1]


def test_a_changed_image_is_scored_again_as_a_new_version(trained: TrainedWorkspace) -> None:
    workspace, truth = trained.workspace, trained.truth
    score_images(workspace)
    key = sorted(truth)[0]
    workspace.store.put(key, workspace.store.get(sorted(truth)[1]))
    report = score_images(workspace)
    assert (report.new, report.scored) == (1, 1)
