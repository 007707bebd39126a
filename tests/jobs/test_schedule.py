"""When a scheduled run retrains: the decision of ``mlc_core.jobs.schedule``."""

from __future__ import annotations

import pytest

from mlc_core.db.labels import LabelRecord, upsert_labels
from mlc_core.db.model_versions import create_model_version, promote_model_version
from mlc_core.db.runs import finish_run, start_run
from mlc_core.jobs.schedule import current_champion_version, decide_retrain
from mlc_core.jobs.workspace import Workspace


def _label(workspace: Workspace, keys: list[str], tag: str = "circle") -> None:
    with workspace.transaction() as session:
        upsert_labels(
            session,
            [LabelRecord(workspace.store.uri(key), tag, True, "test") for key in keys],
        )


def _keys(start: int, count: int) -> list[str]:
    return [f"images/{index:04d}.jpg" for index in range(start, start + count)]


def _record_training(workspace: Workspace, *, promote: bool) -> None:
    """A successful training run that registered a version, promoted or not."""
    with workspace.transaction() as session:
        run = start_run(session, "train", {})
        version = create_model_version(
            session,
            version=f"v{run.id}",
            classes=["circle", "square"],
            thresholds=[0.5, 0.5],
            metrics={},
            backbone="compact_cnn",
            image_size=32,
            artifact_uri="file:///nowhere/model.keras",
            artifact_sha256="0" * 64,
            card_uri="file:///nowhere/card.json",
        )
        if promote:
            promote_model_version(session, version, "test")
        finish_run(session, run, status="succeeded", counts={})


def test_without_labels_nothing_is_retrained_and_the_reason_says_how_to_add_some(
    workspace: Workspace,
) -> None:
    decision = decide_retrain(workspace, "auto", min_new_labelled_images=5)

    assert not decision.retrain
    assert "mlc labels import" in decision.reason


def test_labels_without_a_champion_train_the_first_model(workspace: Workspace) -> None:
    _label(workspace, _keys(0, 3))

    decision = decide_retrain(workspace, "auto", min_new_labelled_images=50)

    assert decision.retrain
    assert "no champion" in decision.reason
    assert decision.champion_version is None


def test_few_new_labels_since_the_last_training_wait_for_the_threshold(
    workspace: Workspace,
) -> None:
    _label(workspace, _keys(0, 10))
    _record_training(workspace, promote=True)
    _label(workspace, _keys(10, 4))

    decision = decide_retrain(workspace, "auto", min_new_labelled_images=5)

    assert not decision.retrain
    assert decision.new_labelled_images == 4
    assert decision.labelled_images == 14


def test_enough_new_labels_since_the_last_training_retrain(workspace: Workspace) -> None:
    _label(workspace, _keys(0, 10))
    _record_training(workspace, promote=True)
    _label(workspace, _keys(10, 5))

    decision = decide_retrain(workspace, "auto", min_new_labelled_images=5)

    assert decision.retrain
    assert "5 images got new or changed labels" in decision.reason


def test_a_changed_label_counts_as_new(workspace: Workspace) -> None:
    _label(workspace, _keys(0, 6))
    _record_training(workspace, promote=True)
    with workspace.transaction() as session:
        upsert_labels(
            session,
            [LabelRecord(workspace.store.uri(key), "circle", False, "test") for key in _keys(0, 6)],
        )

    decision = decide_retrain(workspace, "auto", min_new_labelled_images=6)

    assert decision.retrain


def test_labels_seen_by_a_candidate_that_lost_do_not_count_again(workspace: Workspace) -> None:
    _label(workspace, _keys(0, 10))
    _record_training(workspace, promote=True)
    _label(workspace, _keys(10, 8))
    _record_training(workspace, promote=False)

    decision = decide_retrain(workspace, "auto", min_new_labelled_images=5)

    assert not decision.retrain
    assert decision.new_labelled_images == 0
    assert decision.champion_version == current_champion_version(workspace)


@pytest.mark.parametrize(("policy", "expected"), [("always", True), ("never", False)])
def test_always_and_never_decide_by_themselves(
    workspace: Workspace, policy: str, expected: bool
) -> None:
    _label(workspace, _keys(0, 10))
    _record_training(workspace, promote=True)

    decision = decide_retrain(workspace, policy, min_new_labelled_images=1000)  # type: ignore[arg-type]

    assert decision.retrain is expected


def test_an_unknown_policy_is_refused_with_the_known_ones(workspace: Workspace) -> None:
    with pytest.raises(ValueError, match="auto, always, never"):
        decide_retrain(workspace, "weekly", min_new_labelled_images=5)  # type: ignore[arg-type]
