"""Semi-supervised training: soft or confident pseudo-labels, shared classes only, students in
turn, off = supervised."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from mlc_core.model import noisy_student
from mlc_core.model.dataset import DecodedImages
from mlc_core.model.noisy_student import Teacher, student_budget
from mlc_core.model.pseudo_labels import confidence_cuts, pseudo_labels
from mlc_core.model.recipe import FittedModel, fit_and_calibrate
from mlc_core.model.split import DataSplit
from mlc_core.model.training import EpochReport
from mlc_core.settings import TrainingSettings
from tests.model.conftest import SquareImages


def test_pseudo_labels_are_kept_only_beyond_their_class_confidence() -> None:
    # Class a: validation positives score >= 0.6, one negative at 0.55; class b is noise.
    truth = np.array([[1, 0], [1, 1], [1, 0], [0, 1], [0, 0], [0, 1]], dtype=np.float64)
    scores = np.array([[0.9, 0.5], [0.8, 0.2], [0.6, 0.9], [0.55, 0.1], [0.1, 0.8], [0.2, 0.4]])

    cuts = confidence_cuts(truth, scores, ["a", "b"])
    labels = pseudo_labels(np.array([[0.95, 0.5], [0.58, 0.5], [0.05, 0.5]]), cuts)

    assert cuts.positive[0] == pytest.approx(0.6)
    assert labels[:, 0].tolist()[0] == 1.0 and np.isnan(labels[1, 0]) and labels[2, 0] == 0.0
    # No score of b separates its positives from its negatives: b gets no positive label.
    assert not (labels[:, 1] == 1).any()


def _squares(square_images: SquareImages) -> tuple[DecodedImages, np.ndarray, DataSplit]:
    images, labels = square_images(30, 0)
    keys = [f"image-{index:02d}" for index in range(len(images))]
    split = DataSplit(train=keys[:10], validation=keys[10:20], test=keys[20:])
    return DecodedImages(keys, images), labels, split


SETTINGS = {"image_size": 32, "epochs": 2, "batch_size": 8, "seed": 0}


def _fit_students(
    square_images: SquareImages,
    teacher: Teacher,
    on_epoch_end: Callable[[EpochReport], None] | None = None,
    **settings: Any,
) -> FittedModel:
    """Students of ``teacher`` taught on 12 unlabelled square images, semi-supervised."""
    decoded, labels, split = _squares(square_images)
    unlabelled, _ = square_images(12, 5)
    return fit_and_calibrate(
        decoded,
        labels,
        split,
        ["red", "blue"],
        TrainingSettings(**SETTINGS, semi_supervised=True, **settings),
        unlabelled=unlabelled,
        teacher=teacher,
        on_epoch_end=on_epoch_end,
    )


def _taught(square_images: SquareImages, teacher: Teacher, targets: str) -> dict[str, Any]:
    """What 12 unlabelled square images taught one student of ``teacher``, semi-supervised."""
    # One student: these tests are about the first teacher's targets, not the rounds.
    fitted = _fit_students(
        square_images, teacher, semi_supervised_targets=targets, semi_supervised_rounds=1
    )
    return fitted.semi_supervised


@pytest.mark.parametrize("targets", ["soft", "confident"])
def test_a_teacher_with_other_classes_pseudo_labels_only_the_shared_ones(
    square_images: SquareImages, targets: str
) -> None:
    def knows_red_and_green(images: np.ndarray) -> np.ndarray:
        red = (images[..., 0].max(axis=(1, 2)) > 200).astype(np.float32)
        return np.stack([red, np.full(len(images), 0.5, np.float32)], axis=1)

    semi = _taught(
        square_images, Teacher("champion v1", ["red", "green"], knows_red_and_green), targets
    )
    assert semi["teacher"] == "champion v1" and semi["unlabelled_images"] == 12
    assert semi["pseudo_labelled_classes"] == ["red"]
    assert semi["classes_without_teacher"] == ["blue"]
    assert semi["used_images"] == 12 and semi["pseudo_positives"] == {"red": 6, "blue": 0}


def test_semi_supervision_off_or_without_unlabelled_images_is_the_supervised_path(
    square_images: SquareImages,
) -> None:
    decoded, labels, split = _squares(square_images)
    unlabelled, _ = square_images(12, 5)

    off = fit_and_calibrate(
        decoded, labels, split, ["red", "blue"], TrainingSettings(**SETTINGS), unlabelled=unlabelled
    )
    empty = fit_and_calibrate(
        decoded,
        labels,
        split,
        ["red", "blue"],
        TrainingSettings(**SETTINGS, semi_supervised=True),
        unlabelled=unlabelled[:0],
    )

    assert off.metrics == empty.metrics and off.thresholds == empty.thresholds
    for ours, theirs in zip(off.model.get_weights(), empty.model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert off.semi_supervised == {"note": "semi-supervised training is off"}
    assert "no unlabelled images" in empty.semi_supervised["note"]


@pytest.mark.parametrize(("targets", "used"), [("soft", 12), ("confident", 0)])
def test_soft_targets_keep_what_the_teacher_is_unsure_of_where_confident_ones_drop_it(
    square_images: SquareImages, targets: str, used: int
) -> None:
    def unsure(images: np.ndarray) -> np.ndarray:
        # 0.7 for every image and class: no better than chance on the validation images.
        return np.full((len(images), 2), 0.7, np.float32)

    semi = _taught(square_images, Teacher("champion v1", ["red", "blue"], unsure), targets)
    assert semi["targets"] == targets
    assert semi["used_images"] == used
    if targets == "soft":
        # Every image learns 0.7 of each class: above 0.5, so counted as a positive.
        assert semi["pseudo_positives"] == {"red": 12, "blue": 12}


def test_each_later_student_is_taught_by_the_one_before(
    square_images: SquareImages, caplog: pytest.LogCaptureFixture
) -> None:
    def knows_red(images: np.ndarray) -> np.ndarray:
        return (images[..., 0].max(axis=(1, 2)) > 200).astype(np.float32)[:, None]

    epochs: list[EpochReport] = []
    with caplog.at_level("INFO", logger="mlc_core.model.noisy_student"):
        fitted = _fit_students(
            square_images,
            Teacher("champion v1", ["red"], knows_red),
            on_epoch_end=epochs.append,
            semi_supervised_rounds=2,
        )

    semi = fitted.semi_supervised
    assert semi["rounds"] == 2 and semi["used_images_by_round"] == [12, 12]
    # The card speaks of the first teacher: blue stays unknown in every round.
    assert semi["teacher"] == "champion v1" and semi["classes_without_teacher"] == ["blue"]
    assert (
        "student 2 of 2: 12 of 12 unlabelled images pseudo-labelled by the student of "
        "round 1" in caplog.text
    )
    # Each student's epochs count from 1, and say whose they are.
    assert [(e.model, e.epoch) for e in epochs] == [
        ("student 1 of 2", 1),
        ("student 1 of 2", 2),
        ("student 2 of 2", 1),
        ("student 2 of 2", 2),
    ]
    # What is returned is the second student: its outcome holds that student's epochs.
    assert [(e.loss, e.validation_map) for e in fitted.outcome.history] == [
        (e.loss, e.validation_map) for e in epochs[2:]
    ]


def test_each_student_left_gets_an_equal_share_of_the_time_left() -> None:
    settings = TrainingSettings(**SETTINGS, time_budget_minutes=1)
    started = time.perf_counter() - 30

    ends = [student_budget(settings, started, students_left=n) for n in (2, 1)]

    assert ends[0] == pytest.approx(45, abs=0.5) and ends[1] == pytest.approx(60, abs=0.5)
    assert student_budget(TrainingSettings(**SETTINGS), started, students_left=2) is None


def test_a_student_the_budget_has_no_room_for_keeps_the_last_one(
    square_images: SquareImages, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A budget timed against a real epoch would be flaky here: the second student's share
    # ends at once instead (1 ms after the start), so its first epoch always ends past it.
    def no_room_for_the_second(
        settings: TrainingSettings, started: float, *, students_left: int
    ) -> float | None:
        return None if students_left == 2 else 1e-3

    monkeypatch.setattr(noisy_student, "student_budget", no_room_for_the_second)

    def knows_red(images: np.ndarray) -> np.ndarray:
        return (images[..., 0].max(axis=(1, 2)) > 200).astype(np.float32)[:, None]

    fitted = _fit_students(
        square_images, Teacher("champion v1", ["red"], knows_red), semi_supervised_rounds=2
    )

    semi = fitted.semi_supervised
    assert semi["rounds"] == 1
    assert semi["note"] == "the time budget left room for 1 of 2 students: the last one is kept"
    assert fitted.outcome.epochs_run == SETTINGS["epochs"]  # the first student's, in full
