"""What the next training learns from corrections: stated classes known, the others masked."""

from __future__ import annotations

import json

import numpy as np

from mlc_core.db.labels import LabelRecord, upsert_labels
from mlc_core.db.model_versions import promote_model_version, require_model_version
from mlc_core.jobs.labels_import import import_labels
from mlc_core.jobs.training.data import load_training_data, load_unlabelled_images
from mlc_core.jobs.training.train import train_model_version
from mlc_core.jobs.workspace import Workspace
from mlc_core.model.training import EpochReport
from mlc_core.reports.document import to_text
from mlc_core.reports.training import training_summary
from tests.jobs.conftest import TrainedWorkspace, labels_csv, model_files, put_synthetic_images


def test_a_correction_trains_its_stated_classes_and_masks_the_others(
    workspace: Workspace,
) -> None:
    truth = put_synthetic_images(workspace, 24)
    keys = sorted(truth)
    imported, corrected = keys[:20], keys[20]
    with workspace.transaction() as session:
        import_labels(
            session,
            workspace.store,
            labels_csv({key: truth[key] for key in imported}),
            source="test.csv",
        )
        uri = workspace.store.uri(corrected)
        upsert_labels(
            session,
            [
                LabelRecord(uri, "circle", True, "correction", complete=False),
                LabelRecord(uri, "square", False, "correction", complete=False),
            ],
        )

    data = load_training_data(workspace, workspace.settings.training)

    classes = list(data.vocabulary.classes)
    row = data.label_matrix[data.decoded.keys.index(corrected)]
    assert row[classes.index("circle")] == 1.0
    assert row[classes.index("square")] == 0.0
    others = [index for index, tag in enumerate(classes) if tag not in ("circle", "square")]
    assert np.isnan(row[others]).all()
    assert data.by_key[corrected].complete is False


def test_an_imported_tag_set_stays_closed_world(workspace: Workspace) -> None:
    truth = put_synthetic_images(workspace, 20)
    with workspace.transaction() as session:
        import_labels(session, workspace.store, labels_csv(truth), source="test.csv")

    data = load_training_data(workspace, workspace.settings.training)

    assert not np.isnan(data.label_matrix).any()
    classes = data.vocabulary.classes
    for key, row in zip(data.decoded.keys, data.label_matrix, strict=True):
        assert {classes[i] for i in np.flatnonzero(row == 1)} == set(truth[key]) & set(classes)


def test_semi_supervised_training_uses_the_unlabelled_images_and_the_card_says_how_many(
    workspace: Workspace,
) -> None:
    truth = put_synthetic_images(workspace, 32)
    keys = sorted(truth)
    with workspace.transaction() as session:
        import_labels(
            session,
            workspace.store,
            labels_csv({key: truth[key] for key in keys[:24]}),
            source="test.csv",
        )
    settings = workspace.settings.training.model_copy(update={"semi_supervised": True})
    epochs: list[EpochReport] = []

    report = train_model_version(workspace, settings, on_epoch_end=epochs.append)

    assert report.semi_supervised["unlabelled_images"] == 8
    # Three trainings, each counting its epochs from 1: the progress says whose they are.
    assert sorted({e.model for e in epochs}) == ["first model", "student 1 of 2", "student 2 of 2"]
    assert report.semi_supervised["teacher"] == "a first model trained on the labels"
    assert report.semi_supervised["rounds"] == 2  # the default: two students in turn
    card = json.loads(workspace.store.get(model_files(workspace, report.version).card))
    assert card["extra"]["semi_supervised"]["unlabelled_images"] == 8


def test_unlabelled_images_leave_out_the_excluded_ones(workspace: Workspace) -> None:
    truth = put_synthetic_images(workspace, 6)
    keys = sorted(truth)
    settings = workspace.settings.training

    decoded = load_unlabelled_images(workspace, settings, excluded={keys[0], keys[1]})

    assert decoded.keys == keys[2:]


def test_without_unlabelled_images_semi_supervised_training_says_it_used_labels_alone(
    workspace: Workspace,
) -> None:
    truth = put_synthetic_images(workspace, 20)
    with workspace.transaction() as session:
        import_labels(session, workspace.store, labels_csv(truth), source="test.csv")
    settings = workspace.settings.training.model_copy(update={"semi_supervised": True})

    report = train_model_version(workspace, settings)

    assert "no unlabelled images" in report.semi_supervised["note"]
    assert "no unlabelled images" in to_text(training_summary(report))


def test_the_champion_can_teach_the_next_version(trained: TrainedWorkspace) -> None:
    workspace = trained.workspace
    put_synthetic_images(workspace, 8, folder="images/unlabelled/")
    settings = workspace.settings.training.model_copy(
        update={
            "semi_supervised": True,
            "semi_supervised_teacher": "champion",
            "semi_supervised_rounds": 1,
        }
    )

    report = train_model_version(workspace, settings)

    assert report.semi_supervised["teacher"] == "champion v1"
    assert report.semi_supervised["unlabelled_images"] == 8
    assert report.semi_supervised["classes_without_teacher"] == []


def test_a_champion_that_scores_larger_than_it_trained_still_teaches(
    trained: TrainedWorkspace,
) -> None:
    workspace = trained.workspace
    larger = workspace.settings.training.model_copy(
        update={"image_size": 64, "scoring_scale": 2.0, "promotion_margin": 0.0}
    )
    champion = train_model_version(workspace, larger)
    with workspace.transaction() as session:
        version = require_model_version(session, champion.version)
        promote_model_version(session, version, "test: a champion at 128 px trained at 64")
    put_synthetic_images(workspace, 8, folder="images/unlabelled/")

    report = train_model_version(
        workspace,
        larger.model_copy(
            update={
                "semi_supervised": True,
                "semi_supervised_teacher": "champion",
                "semi_supervised_rounds": 1,
            }
        ),
    )

    assert report.semi_supervised["teacher"] == f"champion {champion.version}"
    assert report.semi_supervised["unlabelled_images"] == 8
