"""Model versions over time: the promotion gate, rollback, changed class lists, trust."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from mlc_core.db.model_versions import get_champion, promote_model_version
from mlc_core.db.models import ModelVersion, Score
from mlc_core.errors import ModelIntegrityError, TrainingDataError, UnknownBackbone
from mlc_core.jobs.labels_import import import_labels
from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.training.train import train_model_version
from mlc_core.jobs.workspace import Workspace, open_workspace
from tests.jobs.conftest import (
    TrainedSnapshot,
    TrainedWorkspace,
    WorkspaceFiles,
    labels_csv,
    model_files,
    put_synthetic_images,
    tiny_settings,
)
from tests.jobs.scoring_support import register_champion


def _import(workspace: Workspace, data: bytes) -> None:
    with workspace.transaction() as session:
        import_labels(session, workspace.store, data, source="test")


@pytest.fixture
def labelled(workspace: Workspace) -> dict[str, tuple[str, ...]]:
    truth = put_synthetic_images(workspace, 48)
    _import(workspace, labels_csv(truth))
    return truth


@pytest.fixture(scope="module")
def second_version_snapshot(first_champion_snapshot: TrainedSnapshot) -> TrainedSnapshot:
    """v1 as in ``trained``, then v2 trained with no promotion margin, once per module.

    Whether v2 is promoted or not, it is judged on v1's test images, and v1 is the one to roll
    back to.
    """
    with first_champion_snapshot.restored() as trained:
        workspace = trained.workspace
        forced = workspace.settings.training.model_copy(update={"promotion_margin": 0.0})
        report = train_model_version(workspace, forced)
    files = WorkspaceFiles(first_champion_snapshot.files.home, "v2")
    return TrainedSnapshot(files, first_champion_snapshot.truth, report)


@pytest.fixture
def two_versions(second_version_snapshot: TrainedSnapshot) -> Iterator[TrainedWorkspace]:
    """A fresh copy of the workspace after v1 and then v2 were trained."""
    with second_version_snapshot.restored() as trained:
        yield trained


def test_a_candidate_that_does_not_beat_the_champion_stays_candidate_with_the_reason(
    trained: TrainedWorkspace,
) -> None:
    workspace, first = trained.workspace, trained.report
    strict = workspace.settings.training.model_copy(update={"promotion_margin": 1.0})
    second = train_model_version(workspace, strict)
    assert second.status == "candidate"
    assert "margin" in second.decision
    assert second.champion_comparison is not None
    assert second.champion_comparison.champion_version == first.version
    with workspace.transaction() as session:
        champion = get_champion(session)
        candidate = session.scalars(select(ModelVersion).where(ModelVersion.version == "v2")).one()
        assert champion is not None and champion.version == "v1"
        assert candidate.decision == second.decision


def test_the_candidate_is_judged_on_the_champions_test_images_it_never_trained_on(
    two_versions: TrainedWorkspace,
) -> None:
    import json

    workspace = two_versions.workspace
    first = json.loads(workspace.store.get(model_files(workspace, "v1").split))
    second = json.loads(workspace.store.get(model_files(workspace, "v2").split))
    assert set(first["test"]) <= set(second["test"])
    assert not set(first["test"]) & (set(second["train"]) | set(second["validation"]))


def test_promote_rolls_back_to_an_earlier_version(two_versions: TrainedWorkspace) -> None:
    workspace = two_versions.workspace
    with workspace.transaction() as session:
        v1 = session.scalars(select(ModelVersion).where(ModelVersion.version == "v1")).one()
        promote_model_version(session, v1, "rollback")
    with workspace.transaction() as session:
        champion = get_champion(session)
        assert champion is not None and champion.version == "v1"
        statuses = dict(session.execute(select(ModelVersion.version, ModelVersion.status)).all())
    assert statuses["v1"] == "champion" and statuses["v2"] in ("retired", "candidate")


def test_a_changed_class_list_gives_a_version_whose_rows_use_its_own_classes(
    trained: TrainedWorkspace,
) -> None:
    workspace = trained.workspace
    score_images(workspace)
    without_rings = {
        key: tuple(t for t in tags if t != "ring") for key, tags in trained.truth.items()
    }
    _import(workspace, labels_csv(without_rings))
    second = train_model_version(workspace, workspace.settings.training)
    assert "ring" not in second.classes
    with workspace.transaction() as session:
        v2 = session.scalars(select(ModelVersion).where(ModelVersion.version == "v2")).one()
        promote_model_version(session, v2, "test")
    score_images(workspace, mode="stale")
    with workspace.transaction() as session:
        widths = {
            (version, len(probabilities))
            for version, probabilities in session.execute(
                select(ModelVersion.version, Score.probabilities).join(
                    ModelVersion, Score.model_version_id == ModelVersion.id
                )
            )
        }
    assert widths == {("v1", 5), ("v2", 4)}


def test_a_tampered_model_file_is_refused(
    workspace: Workspace, labelled: dict[str, tuple[str, ...]]
) -> None:
    # Scoring checks the file it loads whatever made it, so an untrained champion registered as
    # training registers one will do. A trained snapshot would not: its v1 lives at the same
    # URI in every test, and scoring keeps the model it loaded last in memory.
    register_champion(workspace)
    original = workspace.store.get("models/v1/model.keras")
    workspace.store.put("models/v1/model.keras", original[:-10] + b"0123456789")
    with pytest.raises(ModelIntegrityError, match="checksum"):
        score_images(workspace)


def test_one_class_only_stops_before_writing_anything(workspace: Workspace) -> None:
    truth = put_synthetic_images(workspace, 20)
    _import(workspace, labels_csv({key: ("circle",) for key in truth}))
    with pytest.raises(TrainingDataError, match="at least two"):
        train_model_version(workspace, workspace.settings.training)
    assert list(workspace.store.iter_objects("models/")) == []


def test_corrupt_and_missing_labelled_images_are_skipped_and_counted(
    workspace: Workspace, labelled: dict[str, tuple[str, ...]]
) -> None:
    keys = sorted(labelled)
    workspace.store.put(keys[0], b"\xff\xd8\xff\xe0 truncated")
    workspace.store.delete(keys[1])
    report = train_model_version(workspace, workspace.settings.training)
    assert list(report.unreadable_images) == [keys[0]]
    assert report.missing_images == 1
    assert report.status == "champion"


def test_an_unknown_backbone_lists_the_known_ones(
    workspace: Workspace, labelled: dict[str, tuple[str, ...]]
) -> None:
    settings = workspace.settings.training.model_copy(update={"backbone": "resnet9000"})
    with pytest.raises(UnknownBackbone, match="compact_cnn"):
        train_model_version(workspace, settings)
    assert list(workspace.store.iter_objects("models/")) == []


def test_training_refuses_images_above_the_scorers_pixel_limit(
    isolated_mlc_environment: Path, labelled: dict[str, tuple[str, ...]]
) -> None:
    keys = sorted(labelled)
    # 96 x 96 synthetic images; one labelled image is replaced by a larger one.
    big = io.BytesIO()
    PILImage.new("RGB", (200, 200), (200, 30, 30)).save(big, "JPEG")
    settings = tiny_settings(isolated_mlc_environment, scoring={"max_image_pixels": 96 * 96})
    workspace = open_workspace(settings)
    try:
        workspace.store.put(keys[0], big.getvalue())
        report = train_model_version(workspace, settings.training)
    finally:
        workspace.close()

    # The same limit and the same reason scoring would record.
    assert list(report.unreadable_images) == [keys[0]]
    assert "above the limit" in report.unreadable_images[keys[0]]
    assert "MLC_SCORING__MAX_IMAGE_PIXELS" in report.unreadable_images[keys[0]]
