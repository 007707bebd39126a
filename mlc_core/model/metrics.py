"""Quality metrics of a multilabel model on a labeled set of images.

The result is a plain, JSON-ready dict that travels with a model version (its card, the
database, the promotion decision). Undefined values are ``None``, never NaN, so the dict
survives a JSON round trip unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score


def mean_average_precision(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Mean over classes of average precision, counting only classes with a positive.

    A class without any positive image has no defined AP and is left out of the mean; when no
    class has a positive, the mean is undefined and the result is ``None`` (never NaN, so it
    survives JSON and comparisons alike). Unknown labels (NaN) are left out of their class.

    Args:
        labels: 0/1 (or NaN where unknown) matrix of shape ``(num_images, num_classes)``.
        probabilities: the probabilities of the same shape.
    """
    defined = [ap for ap in _average_precisions(labels, probabilities) if ap is not None]
    return float(np.mean(defined)) if defined else None


def _average_precisions(labels: np.ndarray, probabilities: np.ndarray) -> list[float | None]:
    """AP per column over its known rows; ``None`` for a column without positives."""
    known = ~np.isnan(np.asarray(labels, dtype=np.float64))
    results: list[float | None] = []
    for column in range(labels.shape[1]):
        rows = known[:, column]
        truth = labels[rows, column]
        results.append(
            float(average_precision_score(truth, probabilities[rows, column]))
            if (truth == 1).any()
            else None
        )
    return results


def _f1(
    true_positives: np.ndarray, false_positives: np.ndarray, false_negatives: np.ndarray
) -> np.ndarray:
    """F1 per entry of the count arrays, 0 where nothing is true nor predicted (zero_division=0)."""
    denominator = 2 * true_positives + false_positives + false_negatives
    return np.divide(
        2 * true_positives,
        denominator,
        out=np.zeros(np.shape(denominator), dtype=np.float64),
        where=denominator > 0,
    )


def evaluate_predictions(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    thresholds: Sequence[float],
    classes: Sequence[str],
) -> dict[str, Any]:
    """Measure predicted probabilities against true labels.

    An image is predicted to carry class ``j`` when ``y_prob[:, j] >= thresholds[j]``.
    Average precision does not depend on the thresholds; the F1 scores, Hamming loss, subset
    accuracy and predicted label cardinality do. Unknown labels (NaN: a class a correction did
    not state) count nowhere: not in AP, F1 or Hamming loss, and an image is an exact match
    when every class known for it is right.

    Args:
        y_true: 0/1 (or NaN) matrix of shape ``(num_images, num_classes)``.
        y_prob: probabilities of the same shape.
        thresholds: one threshold per class.
        classes: class names, in column order.

    Returns:
        A dict of plain Python values with the keys ``mean_average_precision`` (see
        :func:`mean_average_precision`), ``average_precision`` (class -> AP, ``None`` for a
        class without positives), ``micro_f1``, ``macro_f1`` (over all classes; a class never
        true nor predicted scores 0, as scikit-learn's ``zero_division=0`` does),
        ``hamming_loss``, ``subset_accuracy``, ``label_cardinality_true``,
        ``label_cardinality_predicted``, ``num_images``, ``support`` (class -> number of
        positives) and ``classes_without_positives``.

    Raises:
        ValueError: the shapes disagree, there are no images, ``y_true`` is not 0/1/NaN or
            ``y_prob`` holds NaN or infinity.
    """
    truth, probabilities, cutoffs = _validated(y_true, y_prob, thresholds, classes)
    known = ~np.isnan(truth)
    positive = known & (truth == 1)
    negative = known & (truth == 0)
    predicted = probabilities >= cutoffs
    true_positives = (positive & predicted).sum(axis=0)
    false_positives = (negative & predicted).sum(axis=0)
    false_negatives = (positive & ~predicted).sum(axis=0)
    wrong = (positive & ~predicted) | (negative & predicted)
    support = positive.sum(axis=0)
    return {
        "mean_average_precision": mean_average_precision(truth, probabilities),
        "average_precision": dict(
            zip(classes, _average_precisions(truth, probabilities), strict=True)
        ),
        "micro_f1": float(_f1(true_positives.sum(), false_positives.sum(), false_negatives.sum())),
        "macro_f1": float(_f1(true_positives, false_positives, false_negatives).mean()),
        "hamming_loss": float(wrong.sum() / max(int(known.sum()), 1)),
        "subset_accuracy": float((~wrong.any(axis=1)).mean()),
        "label_cardinality_true": float(positive.sum(axis=1).mean()),
        "label_cardinality_predicted": float(predicted.sum(axis=1).mean()),
        "num_images": int(truth.shape[0]),
        "support": {name: int(count) for name, count in zip(classes, support, strict=True)},
        "classes_without_positives": [
            name for name, count in zip(classes, support, strict=True) if count == 0
        ],
    }


def check_labels_and_probabilities(
    y_true: np.ndarray, y_prob: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``y_true`` as a float64 matrix of 0, 1 and NaN (unknown), ``y_prob`` float64 alike.

    Raises:
        ValueError: ``y_true`` is not 2-D or holds something else than 0, 1 or NaN, the shapes
            differ, or ``y_prob`` holds NaN or infinity.
    """
    truth = np.asarray(y_true, dtype=np.float64)
    probabilities = np.asarray(y_prob, dtype=np.float64)
    if truth.ndim != 2:
        raise ValueError(
            f"y_true must be 2-dimensional (images x classes), got shape {truth.shape}"
        )
    if probabilities.shape != truth.shape:
        raise ValueError(
            f"y_prob has shape {probabilities.shape} but y_true has shape {truth.shape}; "
            "pass one probability per image and class"
        )
    if not (np.isin(truth, (0, 1)) | np.isnan(truth)).all():
        raise ValueError("y_true must hold only 0 and 1 (a multi-hot matrix), or NaN if unknown")
    if not np.isfinite(probabilities).all():
        raise ValueError("y_prob holds NaN or infinite values; check the model's outputs")
    return truth, probabilities


def _validated(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    thresholds: Sequence[float],
    classes: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    truth, probabilities = check_labels_and_probabilities(y_true, y_prob)
    cutoffs = np.asarray(thresholds, dtype=np.float64)
    num_images, num_classes = truth.shape
    if num_images == 0:
        raise ValueError("there are no images to evaluate; pass at least one labeled image")
    if cutoffs.shape != (num_classes,) or len(classes) != num_classes:
        raise ValueError(
            f"expected {num_classes} thresholds and {num_classes} class names (one per column), "
            f"got {cutoffs.size} thresholds and {len(classes)} class names"
        )
    if len(set(classes)) != num_classes:
        raise ValueError(f"class names must be unique, got {list(classes)}")
    return truth, probabilities, cutoffs
