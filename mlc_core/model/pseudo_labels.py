"""Pseudo-labels for unlabelled images from a teacher, kept only where it is confident.

Semi-supervised training here is self-training in the noisy-student way: a teacher (a first
model trained on the labels, or the champion) scores the unlabelled images; for each class an
image gets a positive pseudo-label only above the score where the teacher's validation
precision reaches ``POSITIVE_PRECISION``, a negative one only below the score where its
validation negative predictive value reaches ``NEGATIVE_PRECISION``; in between the class
stays unknown (NaN) and the masked loss ignores it. A student then trains on labels and
pseudo-labels together under strong augmentation.

Why this and not a consistency loss between two augmentations: it reuses the masked loss and
the input pipeline unchanged, costs one extra prediction pass instead of a second forward pass
per training step on a CPU that is the bottleneck, and a class the teacher cannot judge stays
out of the student's targets instead of pulling it towards noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import precision_recall_curve

POSITIVE_PRECISION = 0.95
NEGATIVE_PRECISION = 0.98


@dataclass(frozen=True)
class ConfidenceCuts:
    """Per student class: scores at or above ``positive`` are positive pseudo-labels, at or
    below ``negative`` negative ones; NaN where the class gets none of that kind."""

    classes: list[str]
    positive: np.ndarray
    negative: np.ndarray
    notes: list[str] = field(default_factory=list)


def confidence_cuts(
    validation_labels: np.ndarray,
    validation_probabilities: np.ndarray,
    classes: Sequence[str],
) -> ConfidenceCuts:
    """Choose each class's confident cuts on validation images the teacher did not train on.

    Args:
        validation_labels: 1/0/NaN ``(N, C)`` in the order of ``classes``.
        validation_probabilities: the teacher's probabilities, same shape (NaN columns for
            classes the teacher does not know).
        classes: the class names.
    """
    positive = np.full(len(classes), np.nan)
    negative = np.full(len(classes), np.nan)
    notes: list[str] = []
    for column, name in enumerate(classes):
        known = ~np.isnan(validation_labels[:, column]) & ~np.isnan(
            validation_probabilities[:, column]
        )
        truth = validation_labels[known, column]
        scores = validation_probabilities[known, column]
        if not (truth == 1).any() or not (truth == 0).any():
            notes.append(f"class {name!r}: no positive and negative validation image to trust")
            continue
        positive[column] = _cut_reaching(truth, scores, POSITIVE_PRECISION)
        flipped = _cut_reaching(1 - truth, 1 - scores, NEGATIVE_PRECISION)
        negative[column] = 1 - flipped if not np.isnan(flipped) else np.nan
    # A positive pseudo-label below 0.5 or a negative one above it would contradict the model.
    positive = np.where(positive < 0.5, 0.5, positive)
    negative = np.where(negative > 0.5, 0.5, negative)
    return ConfidenceCuts(list(classes), positive, negative, notes)


def _cut_reaching(truth: np.ndarray, scores: np.ndarray, target: float) -> float:
    """The lowest score from which every higher cut keeps precision >= ``target`` (NaN: none)."""
    precision, _, cuts = precision_recall_curve(truth, scores)
    precision = precision[:-1]
    # Precision is not monotone in the cut: take the lowest cut above the last miss.
    failing = np.flatnonzero(precision < target)
    start = int(failing[-1]) + 1 if failing.size else 0
    return float(cuts[start]) if start < len(cuts) else float("nan")


def pseudo_labels(probabilities: np.ndarray, cuts: ConfidenceCuts) -> np.ndarray:
    """1 / 0 / NaN float32 ``(N, C)``: the confident part of the teacher's probabilities."""
    labels = np.full(probabilities.shape, np.nan, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        labels[probabilities >= cuts.positive] = 1.0
        labels[probabilities <= cuts.negative] = 0.0
    return labels


def teacher_columns(teacher_classes: Sequence[str], classes: Sequence[str]) -> list[int | None]:
    """For each student class, the teacher's column of the same name (``None``: unknown)."""
    position = {name: index for index, name in enumerate(teacher_classes)}
    return [position.get(name) for name in classes]


def in_student_order(teacher_probabilities: np.ndarray, columns: list[int | None]) -> np.ndarray:
    """The teacher's probabilities re-ordered to the student's classes, NaN where it has none."""
    out = np.full((len(teacher_probabilities), len(columns)), np.nan, dtype=np.float64)
    for student, teacher in enumerate(columns):
        if teacher is not None:
            out[:, student] = teacher_probabilities[:, teacher]
    return out
