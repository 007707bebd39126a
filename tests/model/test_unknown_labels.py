"""Unknown labels (NaN: classes a correction did not state) count nowhere in measuring."""

from __future__ import annotations

import numpy as np
import pytest

from mlc_core.model.metrics import evaluate_predictions
from mlc_core.model.split import split_dataset
from mlc_core.model.thresholds import calibrate_thresholds

NAN = np.nan


def test_metrics_and_thresholds_ignore_unknown_entries() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, (40, 3)).astype(np.float64)
    probabilities = rng.uniform(size=(40, 3))
    unknown = truth.copy()
    # Class 1 unknown for the last ten images; whatever the model said there must not count.
    unknown[30:, 1] = NAN
    kept = np.arange(30)

    calibrated = calibrate_thresholds(unknown, probabilities)
    alone = calibrate_thresholds(truth[kept][:, [1]], probabilities[kept][:, [1]])
    masked = evaluate_predictions(unknown, probabilities, [0.5] * 3, ["a", "b", "c"])
    known_rows = evaluate_predictions(
        truth[kept][:, [1]], probabilities[kept][:, [1]], [0.5], ["b"]
    )

    assert calibrated.thresholds[1] == alone.thresholds[0]
    assert masked["average_precision"]["b"] == pytest.approx(known_rows["average_precision"]["b"])
    assert masked["support"]["b"] == known_rows["support"]["b"]


def test_exact_match_counts_only_the_known_classes_of_an_image() -> None:
    truth = np.array([[1.0, NAN], [0.0, 1.0]])
    probabilities = np.array([[0.9, 0.9], [0.1, 0.2]])

    metrics = evaluate_predictions(truth, probabilities, [0.5, 0.5], ["a", "b"])

    assert metrics["subset_accuracy"] == 0.5
    assert metrics["hamming_loss"] == pytest.approx(1 / 3)


def test_the_split_stratifies_known_positives_and_accepts_unknown_entries() -> None:
    keys = [f"k{index:02d}" for index in range(30)]
    labels = np.zeros((30, 2))
    labels[::2, 0] = 1
    labels[1::2, 1] = 1
    labels[20:, 1] = NAN

    split = split_dataset(keys, labels, validation_fraction=0.2, test_fraction=0.2, seed=0)

    assert sorted(split.train + split.validation + split.test) == keys
    assert all(split.validation) and split.test
