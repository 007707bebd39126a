"""Per-class decision thresholds, calibrated on the validation split.

A sigmoid output of 0.5 is rarely the best cut: rare classes often score well below it even
when the model ranks them correctly. Each class therefore gets its own threshold, chosen on
validation images the model did not train on.

Choices, and why:

- **Where between two scores.** Any threshold strictly between two adjacent distinct
  validation scores gives the same validation predictions. We take the midpoint of the lowest
  score kept and the highest score left out, so new images get the widest margin on both sides
  instead of a cut that sits exactly on a validation image. When the best cut keeps every
  validation image, there is no score below it and the lowest score itself is the threshold.
- **Ties.** When several cuts reach the same best F1, the highest one wins: it tags fewer
  images at equal F1, and a wrong tag shown to people costs more trust than a missing one.
- **Bounds.** Thresholds are clipped into ``[MIN_THRESHOLD, MAX_THRESHOLD]`` = ``[0.01, 0.99]``.
  Below 0.01 a class would be tagged on almost any faint signal, above 0.99 almost never; both
  come from a few validation images and do not carry over to new ones. A clipped threshold
  gets a note.
- **Fallbacks.** A class with no positive (or no negative) validation image has nothing to
  calibrate on and keeps ``default``; a precision target the class never reaches falls back
  to the best-F1 threshold. Each fallback gets a note, one sentence for people.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.metrics import precision_recall_curve

from mlc_core.model.metrics import check_labels_and_probabilities

MIN_THRESHOLD = 0.01
MAX_THRESHOLD = 0.99
Strategy = Literal["f1", "precision"]
STRATEGIES: tuple[Strategy, ...] = ("f1", "precision")
# Precision and F1 are ratios of small integers; equal values may differ in the last bits.
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class ThresholdCalibration:
    """One threshold per class, and a sentence for each class that could not be calibrated."""

    thresholds: list[float]
    notes: list[str]


def calibrate_thresholds(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    *,
    strategy: Strategy = "f1",
    target_precision: float = 0.9,
    default: float = 0.5,
    classes: Sequence[str] | None = None,
) -> ThresholdCalibration:
    """Choose one threshold per class from validation labels and probabilities.

    An image is tagged with class ``j`` when its probability is ``>=`` the threshold.

    Args:
        y_true: 0/1 matrix of shape ``(num_images, num_classes)`` (validation labels), NaN
            where a class is unknown for an image (those entries are left out).
        y_prob: the model's probabilities for the same images, same shape.
        strategy: ``"f1"`` maximises each class's F1 on validation; ``"precision"`` takes
            the lowest threshold whose validation precision reaches ``target_precision``
            (that is, the most recall at that precision).
        target_precision: the precision the ``"precision"`` strategy must reach, in (0, 1].
        default: the threshold of a class that cannot be calibrated, in (0, 1).
        classes: class names in column order, used only to name classes in the notes.

    Returns:
        Thresholds in ``[MIN_THRESHOLD, MAX_THRESHOLD]``, one per column, and one note per
        class that fell back to ``default``, missed its precision target or was clipped.

    Raises:
        ValueError: the shapes disagree, ``y_true`` is not 0/1, ``y_prob`` is not finite,
            or an argument is out of range.
    """
    truth, probabilities = _validated(y_true, y_prob, classes)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown threshold strategy {strategy!r}; use one of {STRATEGIES}")
    if not 0 < target_precision <= 1:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    if not 0 < default < 1:
        raise ValueError(f"default threshold must be in (0, 1), got {default}")

    thresholds: list[float] = []
    notes: list[str] = []
    for column in range(truth.shape[1]):
        name = f"class {classes[column]!r}" if classes is not None else f"class {column}"
        # Images whose label of this class is unknown (NaN) say nothing about its cut.
        known = ~np.isnan(truth[:, column])
        threshold, class_notes = _threshold_of_class(
            truth[known, column],
            probabilities[known, column],
            strategy,
            target_precision,
            default,
            name,
        )
        thresholds.append(threshold)
        notes.extend(class_notes)
    return ThresholdCalibration(thresholds=thresholds, notes=notes)


def _threshold_of_class(
    labels: np.ndarray,
    scores: np.ndarray,
    strategy: Strategy,
    target_precision: float,
    default: float,
    name: str,
) -> tuple[float, list[str]]:
    """One class's threshold (clipped to the bounds) and the notes it earned."""
    num_positives = int(labels.sum())
    if len(labels) == 0:
        return default, [f"{name} is known for no validation image; threshold stays at {default}"]
    if num_positives == 0:
        return default, [f"{name} has no positives in validation; threshold stays at {default}"]
    if num_positives == len(labels):
        return default, [
            f"{name} has no negatives in validation (every image carries it); "
            f"threshold stays at {default}"
        ]
    threshold, note = _calibrate_class(labels, scores, strategy, target_precision, name)
    notes = [note] if note else []
    clipped = min(max(threshold, MIN_THRESHOLD), MAX_THRESHOLD)
    if clipped != threshold:
        notes.append(
            f"{name} calibrated to {threshold:.4f}, outside [{MIN_THRESHOLD}, "
            f"{MAX_THRESHOLD}]; threshold clipped to {clipped}"
        )
    return clipped, notes


def _calibrate_class(
    labels: np.ndarray,
    scores: np.ndarray,
    strategy: Strategy,
    target_precision: float,
    name: str,
) -> tuple[float, str | None]:
    """Return the threshold of one class that has both positives and negatives, and a note."""
    precision, recall, cuts = precision_recall_curve(labels, scores)
    # The curve ends with (precision 1, recall 0), a point no threshold produces.
    precision, recall = precision[:-1], recall[:-1]
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall,
        denominator,
        out=np.zeros_like(denominator),
        where=denominator > 0,
    )
    # cuts are ascending, so the last index among the ties is the highest threshold.
    best_f1_index = int(np.flatnonzero(f1 >= f1.max() - _TOLERANCE)[-1])

    if strategy == "f1":
        return _between(cuts, best_f1_index), None
    reaching = np.flatnonzero(precision >= target_precision - _TOLERANCE)
    if reaching.size:
        return _between(cuts, int(reaching[0])), None
    note = (
        f"{name} never reaches precision {target_precision} on validation "
        f"(best {precision.max():.3f}); threshold maximises F1 instead"
    )
    return _between(cuts, best_f1_index), note


def _between(cuts: np.ndarray, index: int) -> float:
    """Midpoint of the lowest kept score and the highest dropped one (see module docstring)."""
    if index == 0:
        return float(cuts[0])
    return float((cuts[index - 1] + cuts[index]) / 2)


def _validated(
    y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    truth, probabilities = check_labels_and_probabilities(y_true, y_prob)
    if classes is not None and len(classes) != truth.shape[1]:
        raise ValueError(
            f"expected {truth.shape[1]} class names (one per column), got {len(classes)}"
        )
    return truth, probabilities
