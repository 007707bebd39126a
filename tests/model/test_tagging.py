from __future__ import annotations

import numpy as np
import pytest

from mlc_core.labels import LabelVocabulary, predicted_labels

VOCABULARY = LabelVocabulary(("desert", "sea", "sunset"))
THRESHOLDS = [0.5, 0.4, 0.6]


def test_tags_are_the_classes_at_or_above_their_threshold_most_probable_first() -> None:
    tags = VOCABULARY.tags_from_probabilities([0.5, 0.9, 0.59], THRESHOLDS)

    assert tags == [("sea", pytest.approx(0.9)), ("desert", 0.5)]


def test_an_image_below_every_threshold_gets_no_tag_by_default() -> None:
    assert VOCABULARY.tags_from_probabilities([0.3, 0.2, 0.55], THRESHOLDS) == []


def test_top_class_fallback_tags_the_most_probable_class_when_none_passes() -> None:
    tags = VOCABULARY.tags_from_probabilities([0.3, 0.2, 0.55], THRESHOLDS, top_class_fallback=True)

    assert tags == [("sunset", pytest.approx(0.55))]


def test_top_class_fallback_leaves_images_with_a_passing_class_alone() -> None:
    probabilities = np.array([[0.45, 0.41, 0.59], [0.1, 0.3, 0.2]])

    chosen = predicted_labels(probabilities, THRESHOLDS, top_class_fallback=True)

    assert chosen.tolist() == [[False, True, False], [False, True, False]]
    assert predicted_labels(probabilities, THRESHOLDS).tolist() == [
        [False, True, False],
        [False, False, False],
    ]


def test_predicted_labels_needs_one_column_per_threshold() -> None:
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        predicted_labels(np.zeros((2, 2)), THRESHOLDS)
