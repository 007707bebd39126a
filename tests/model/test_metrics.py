from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, hamming_loss

from mlc_core.model.metrics import evaluate_predictions, mean_average_precision

CLASSES = ["sky", "sea", "tree", "road"]
THRESHOLDS = [0.5, 0.3, 0.6, 0.4]


def random_predictions() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y_true = (rng.random((50, len(CLASSES))) < 0.4).astype(np.float32)
    # Informative but imperfect: positives score higher on average.
    y_prob = np.clip(0.35 * y_true + 0.65 * rng.random(y_true.shape), 0, 1)
    return y_true, y_prob


def test_scores_match_scikit_learn_on_random_data() -> None:
    y_true, y_prob = random_predictions()
    y_pred = (y_prob >= np.array(THRESHOLDS)).astype(int)

    metrics = evaluate_predictions(y_true, y_prob, THRESHOLDS, CLASSES)

    assert metrics["micro_f1"] == pytest.approx(
        f1_score(y_true, y_pred, average="micro", zero_division=0)
    )
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(y_true, y_pred, average="macro", zero_division=0)
    )
    assert metrics["hamming_loss"] == pytest.approx(hamming_loss(y_true, y_pred))
    assert metrics["subset_accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))


def test_average_precision_matches_scikit_learn_per_class_and_on_average() -> None:
    y_true, y_prob = random_predictions()

    metrics = evaluate_predictions(y_true, y_prob, THRESHOLDS, CLASSES)

    expected = [average_precision_score(y_true[:, j], y_prob[:, j]) for j in range(len(CLASSES))]
    assert list(metrics["average_precision"].values()) == pytest.approx(expected)
    assert metrics["mean_average_precision"] == pytest.approx(np.mean(expected))


def test_counts_and_cardinalities_describe_the_images() -> None:
    y_true = np.array([[1, 0], [1, 1], [0, 0]])
    y_prob = np.array([[0.9, 0.9], [0.8, 0.1], [0.6, 0.1]])

    metrics = evaluate_predictions(y_true, y_prob, [0.5, 0.5], ["a", "b"])

    assert metrics["num_images"] == 3
    assert metrics["support"] == {"a": 2, "b": 1}
    assert metrics["label_cardinality_true"] == pytest.approx(1.0)
    assert metrics["label_cardinality_predicted"] == pytest.approx(4 / 3)


def test_class_without_positives_has_no_average_precision_and_is_left_out_of_the_mean() -> None:
    y_true = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    y_prob = np.array([[0.9, 0.2], [0.2, 0.7], [0.6, 0.1], [0.7, 0.3]])

    metrics = evaluate_predictions(y_true, y_prob, [0.5, 0.5], ["a", "b"])

    assert metrics["average_precision"]["b"] is None
    assert metrics["classes_without_positives"] == ["b"]
    assert metrics["mean_average_precision"] == pytest.approx(metrics["average_precision"]["a"])


def test_no_positives_at_all_gives_no_mean_average_precision() -> None:
    metrics = evaluate_predictions(np.zeros((2, 2)), np.full((2, 2), 0.4), [0.5, 0.5], ["a", "b"])

    assert metrics["mean_average_precision"] is None


def test_all_correct_predictions_score_perfectly() -> None:
    y_true = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    y_prob = np.where(y_true == 1, 0.8, 0.2)

    metrics = evaluate_predictions(y_true, y_prob, [0.5, 0.5, 0.5], ["a", "b", "c"])

    assert metrics["mean_average_precision"] == pytest.approx(1.0)
    assert metrics["micro_f1"] == pytest.approx(1.0)
    assert metrics["macro_f1"] == pytest.approx(1.0)
    assert metrics["hamming_loss"] == 0.0
    assert metrics["subset_accuracy"] == 1.0


def test_probability_equal_to_threshold_counts_as_predicted() -> None:
    metrics = evaluate_predictions(np.array([[1], [0]]), np.array([[0.5], [0.2]]), [0.5], ["a"])

    assert metrics["subset_accuracy"] == 1.0


def test_result_survives_a_json_round_trip_unchanged() -> None:
    y_true, y_prob = random_predictions()
    y_true[:, 2] = 0

    metrics = evaluate_predictions(y_true, y_prob, THRESHOLDS, CLASSES)

    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics


def test_mismatched_shapes_are_refused_with_both_shapes() -> None:
    with pytest.raises(
        ValueError, match=r"y_prob has shape \(2, 3\) but y_true has shape \(2, 2\)"
    ):
        evaluate_predictions(np.zeros((2, 2)), np.zeros((2, 3)), [0.5, 0.5], ["a", "b"])


def test_wrong_number_of_thresholds_is_refused() -> None:
    with pytest.raises(ValueError, match="expected 2 thresholds and 2 class names"):
        evaluate_predictions(np.zeros((2, 2)), np.zeros((2, 2)), [0.5], ["a", "b"])


def test_empty_evaluation_set_is_refused() -> None:
    with pytest.raises(ValueError, match="no images to evaluate"):
        evaluate_predictions(np.zeros((0, 2)), np.zeros((0, 2)), [0.5, 0.5], ["a", "b"])


def test_nan_probabilities_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        evaluate_predictions(np.array([[1], [0]]), np.array([[np.nan], [0.1]]), [0.5], ["a"])


def test_mean_average_precision_skips_classes_without_positives() -> None:
    labels = np.array([[1, 0], [0, 0], [1, 0]], dtype=np.float32)
    probabilities = np.array([[0.9, 0.5], [0.1, 0.5], [0.8, 0.5]], dtype=np.float32)

    assert mean_average_precision(labels, probabilities) == pytest.approx(1.0)


def test_one_mean_average_precision_without_any_positive_is_none_for_training_and_evaluation() -> (
    None
):
    labels = np.zeros((3, 2), dtype=np.float32)
    probabilities = np.full((3, 2), 0.4, dtype=np.float32)

    # The training loop's early stopping and the version's test metrics use one function, and
    # an undefined mean is one documented value (None), never NaN in one and None in the other.
    assert mean_average_precision(labels, probabilities) is None
    assert (
        evaluate_predictions(labels, probabilities, [0.5, 0.5], ["a", "b"])[
            "mean_average_precision"
        ]
        is None
    )
