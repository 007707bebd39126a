"""Noisy-student self-training: a teacher pseudo-labels the unlabelled images, a student trains
on labels and pseudo-labels under strong augmentation, and each student teaches the next.

:func:`train_noisy_student` is the semi-supervised branch of
:func:`mlc_core.model.recipe.fit_and_calibrate`; :mod:`mlc_core.model.pseudo_labels` holds the
NumPy side (which teacher column feeds which class, the confidence cuts).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from mlc_core.errors import TrainingBudgetTooSmall
from mlc_core.model.predict import PREDICT_BATCH_SIZE, Predictor
from mlc_core.model.pseudo_labels import (
    confidence_cuts,
    in_student_order,
    pseudo_labels,
    teacher_columns,
)
from mlc_core.model.training import EpochReport, TrainingOutcome, budget_seconds, build_and_train

if TYPE_CHECKING:
    from mlc_core.settings import TrainingSettings

logger = logging.getLogger(__name__)

# With a time budget and no teacher given, the first model (the teacher) may use this share
# of the time left; the students, training on more images, get the rest.
TEACHER_BUDGET_SHARE = 0.35
FIRST_MODEL_TEACHER = "a first model trained on the labels"


@dataclass(frozen=True)
class Teacher:
    """A model that gives pseudo-labels: its name for people, its classes, and its scorer of
    images decoded at the student's size."""

    name: str
    classes: list[str]
    predict: Callable[[np.ndarray], np.ndarray]


def train_noisy_student(
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    unlabelled: np.ndarray,
    classes: list[str],
    settings: TrainingSettings,
    on_epoch_end: Callable[[EpochReport], None] | None,
    started: float,
    teacher: Teacher | None,
) -> tuple[keras.Model, TrainingOutcome, dict[str, Any]]:
    """Train ``settings.semi_supervised_rounds`` students in turn and return the last one.

    The first is taught by ``teacher`` (default: a first model trained here on ``train``), each
    later one by the student before it. Returns the kept model, its training outcome and the
    card's ``semi_supervised`` summary (see :func:`~mlc_core.model.recipe.fit_and_calibrate`).

    Raises:
        TrainingBudgetTooSmall: the budget ended before the first epoch of the first model
            trained here (the first model, or the first student when ``teacher`` is given).
    """
    # The last model trained here: what is kept when the budget stops a later student.
    kept: tuple[keras.Model, TrainingOutcome] | None = None
    if teacher is None:
        first_budget = _share_of_time_left(settings, started, TEACHER_BUDGET_SHARE)
        kept = build_and_train(
            train, validation, settings, _naming(on_epoch_end, "first model"), started, first_budget
        )
        teacher = _teacher_of(kept[0], FIRST_MODEL_TEACHER, classes)
    columns = teacher_columns(teacher.classes, classes)
    # Later students teach every class; the classes the first teacher lacks stay unknown in
    # every round, so the card's list of pseudo-labelled classes holds for all of them.
    unknown_to_first = np.array([column is None for column in columns])
    rounds = settings.semi_supervised_rounds
    semi: dict[str, Any] = {}
    for round_number in range(1, rounds + 1):
        pseudo = _targets(teacher, columns, unlabelled, validation, classes, settings)
        pseudo[:, unknown_to_first] = np.nan
        if round_number == 1:
            semi = _summary(teacher.name, pseudo, len(unlabelled), classes, columns, settings)
        student_train = _with_pseudo_labels(train, unlabelled, pseudo)
        semi["used_images_by_round"].append(len(student_train[0]) - len(train[0]))
        logger.info(
            "semi-supervised, student %d of %d: %d of %d unlabelled images pseudo-labelled by %s",
            round_number,
            rounds,
            semi["used_images_by_round"][-1],
            len(unlabelled),
            teacher.name,
        )
        try:
            kept = build_and_train(
                student_train,
                validation,
                settings,
                _naming(on_epoch_end, f"student {round_number} of {rounds}"),
                started,
                student_budget(settings, started, students_left=rounds - round_number + 1),
                strong=True,
            )
        except TrainingBudgetTooSmall:
            if kept is None:
                raise
            semi["note"] = _no_room_note(round_number, rounds)
            break
        semi["rounds"] = round_number
        # Noisy student: each student teaches the next one.
        teacher = _teacher_of(kept[0], f"the student of round {round_number}", classes)
        columns = teacher_columns(classes, classes)
    assert kept is not None
    return kept[0], kept[1], semi


def _with_pseudo_labels(
    train: tuple[np.ndarray, np.ndarray], unlabelled: np.ndarray, pseudo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The labelled images and those unlabelled ones with at least one pseudo-label."""
    used = ~np.isnan(pseudo).all(axis=1)
    return (
        np.concatenate([train[0], unlabelled[used]]),
        np.concatenate([train[1].astype(np.float32), pseudo[used]]),
    )


def _no_room_note(round_number: int, rounds: int) -> str:
    """The card's note when the budget has no room for student ``round_number``."""
    if round_number == 1:
        return "the time budget left no room for the student: the first model is kept"
    return (
        f"the time budget left room for {round_number - 1} of {rounds} students: the last one "
        "is kept"
    )


def _naming(
    on_epoch_end: Callable[[EpochReport], None] | None, model: str
) -> Callable[[EpochReport], None] | None:
    """``on_epoch_end`` told which model each epoch is of: every training counts from epoch 1."""
    if on_epoch_end is None:
        return None
    return lambda report: on_epoch_end(dataclasses.replace(report, model=model))


def _teacher_of(model: keras.Model, name: str, classes: list[str]) -> Teacher:
    return Teacher(name, classes, Predictor(model, batch_size=PREDICT_BATCH_SIZE).predict)


def _targets(
    teacher: Teacher,
    columns: list[int | None],
    unlabelled: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray],
    classes: list[str],
    settings: TrainingSettings,
) -> np.ndarray:
    """The student's targets for ``unlabelled`` from ``teacher`` (NaN: unknown)."""
    taught = in_student_order(teacher.predict(unlabelled), columns)
    if settings.semi_supervised_targets == "soft":
        # NaN (unknown to the masked loss) where the teacher has no such class.
        return taught.astype(np.float32)
    cuts = confidence_cuts(
        validation[1], in_student_order(teacher.predict(validation[0]), columns), classes
    )
    return pseudo_labels(taught, cuts)


def _summary(
    teacher_name: str,
    pseudo: np.ndarray,
    offered: int,
    classes: list[str],
    columns: list[int | None],
    settings: TrainingSettings,
) -> dict[str, Any]:
    """What the first teacher's targets hold, for the model card."""
    return {
        "teacher": teacher_name,
        "unlabelled_images": offered,
        "used_images": int((~np.isnan(pseudo).all(axis=1)).sum()),
        "pseudo_labelled_classes": [
            name
            for name, count in zip(classes, (~np.isnan(pseudo)).sum(axis=0), strict=True)
            if count
        ],
        "classes_without_teacher": [
            name for name, c in zip(classes, columns, strict=True) if c is None
        ],
        "targets": settings.semi_supervised_targets,
        # Soft targets: images the teacher puts at 0.5 or above.
        "pseudo_positives": {
            name: int(n) for name, n in zip(classes, (pseudo >= 0.5).sum(axis=0), strict=True)
        },
        "rounds": 0,
        "used_images_by_round": [],
    }


def student_budget(
    settings: TrainingSettings, started: float, *, students_left: int
) -> float | None:
    """Where this student's training must end: an equal share of the time left for each
    student still to train (they train on the same images)."""
    return _share_of_time_left(settings, started, 1 / students_left)


def _share_of_time_left(settings: TrainingSettings, started: float, share: float) -> float | None:
    """Seconds from ``started`` to the end of ``share`` of the budget's time left (``None``
    without a budget)."""
    budget = budget_seconds(settings)
    if budget is None:
        return None
    spent = time.perf_counter() - started
    return spent + max(budget - spent, 0.0) * share
