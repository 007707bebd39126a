from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from mlc_core.model.thresholds import MAX_THRESHOLD, MIN_THRESHOLD, calibrate_thresholds


def column(values: Sequence[float]) -> np.ndarray:
    return np.array(values, dtype=np.float64).reshape(-1, 1)


def test_planted_class_gets_a_threshold_in_the_gap_between_its_scores() -> None:
    rng = np.random.default_rng(0)
    y_true = column([1] * 20 + [0] * 80)
    # The model ranks perfectly but is shy: positives near 0.15, negatives near 0.05.
    y_prob = np.where(
        y_true == 1, rng.uniform(0.12, 0.18, (100, 1)), rng.uniform(0.02, 0.08, (100, 1))
    )

    calibration = calibrate_thresholds(y_true, y_prob)

    assert calibration.thresholds[0] == pytest.approx(0.10, abs=0.02)
    assert calibration.notes == []


def test_threshold_is_the_midpoint_between_the_scores_it_separates() -> None:
    calibration = calibrate_thresholds(column([0, 0, 1, 1]), column([0.1, 0.2, 0.4, 0.6]))

    assert calibration.thresholds == [pytest.approx(0.3)]


def test_equal_best_f1_picks_the_higher_threshold() -> None:
    # Keeping only 0.9 and keeping everything down to 0.4 both give F1 = 2/3.
    y_true = column([1, 0, 0, 1, 0])
    y_prob = column([0.9, 0.7, 0.6, 0.4, 0.1])

    calibration = calibrate_thresholds(y_true, y_prob)

    assert calibration.thresholds == [pytest.approx(0.8)]


def test_precision_strategy_reaches_its_target_on_validation() -> None:
    rng = np.random.default_rng(1)
    y_true = (rng.random((400, 3)) < 0.3).astype(np.float64)
    y_prob = np.clip(0.4 * y_true + 0.6 * rng.random(y_true.shape), 0, 1)

    calibration = calibrate_thresholds(y_true, y_prob, strategy="precision", target_precision=0.9)

    predicted = y_prob >= np.array(calibration.thresholds)
    precision = (predicted & (y_true == 1)).sum(axis=0) / predicted.sum(axis=0)
    assert (precision >= 0.9).all()


def test_precision_strategy_keeps_as_much_recall_as_the_target_allows() -> None:
    # Cutting at 0.5 keeps 4 of 4 positives at precision 4/5 = 0.8; lower cuts fall below it.
    y_true = column([1, 1, 0, 1, 1, 0, 0])
    y_prob = column([0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.2])

    calibration = calibrate_thresholds(y_true, y_prob, strategy="precision", target_precision=0.8)

    assert calibration.thresholds == [pytest.approx(0.4)]


def test_unreachable_precision_falls_back_to_best_f1_with_a_note() -> None:
    y_true = column([0, 1, 0, 1])
    y_prob = column([0.9, 0.8, 0.3, 0.2])

    calibration = calibrate_thresholds(y_true, y_prob, strategy="precision", target_precision=0.9)

    assert calibration.thresholds == calibrate_thresholds(y_true, y_prob).thresholds
    assert calibration.notes == [
        "class 0 never reaches precision 0.9 on validation (best 0.500); "
        "threshold maximises F1 instead"
    ]


def test_class_without_positives_keeps_the_default_with_a_note() -> None:
    y_true = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    y_prob = np.array([[0.8, 0.3, 0.6], [0.2, 0.7, 0.1], [0.9, 0.1, 0.2]])

    calibration = calibrate_thresholds(y_true, y_prob)

    assert calibration.thresholds[2] == 0.5
    assert calibration.notes == ["class 2 has no positives in validation; threshold stays at 0.5"]


def test_class_without_negatives_keeps_the_default_with_a_note() -> None:
    calibration = calibrate_thresholds(column([1, 1]), column([0.3, 0.9]), default=0.4)

    assert calibration.thresholds == [0.4]
    assert calibration.notes == [
        "class 0 has no negatives in validation (every image carries it); threshold stays at 0.4"
    ]


def test_notes_name_classes_when_names_are_given() -> None:
    calibration = calibrate_thresholds(column([0, 0]), column([0.3, 0.9]), classes=["sea"])

    assert calibration.notes == [
        "class 'sea' has no positives in validation; threshold stays at 0.5"
    ]


def test_thresholds_below_the_floor_are_clipped_with_a_note() -> None:
    calibration = calibrate_thresholds(column([1, 1, 0, 0]), column([0.004, 0.005, 0.001, 0.0]))

    assert calibration.thresholds == [MIN_THRESHOLD]
    assert calibration.notes == [
        "class 0 calibrated to 0.0025, outside [0.01, 0.99]; threshold clipped to 0.01"
    ]


def test_thresholds_above_the_ceiling_are_clipped() -> None:
    calibration = calibrate_thresholds(column([1, 1, 0, 0]), column([0.999, 0.998, 0.996, 0.5]))

    assert calibration.thresholds == [MAX_THRESHOLD]


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown threshold strategy 'recall'"):
        calibrate_thresholds(column([1, 0]), column([0.6, 0.2]), strategy="recall")  # type: ignore[arg-type]


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(
        ValueError, match=r"y_prob has shape \(3, 1\) but y_true has shape \(2, 1\)"
    ):
        calibrate_thresholds(column([1, 0]), column([0.6, 0.2, 0.1]))
