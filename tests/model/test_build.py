from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mlc_core.model.backbones import backbone_names
from mlc_core.model.build import (
    _pool_upper_and_lower_halves,
    build_model,
    model_image_size,
    model_num_labels,
)
from mlc_core.model.predict import Predictor


@pytest.mark.parametrize("backbone", backbone_names())
def test_each_backbone_outputs_one_probability_per_label(backbone: str) -> None:
    # 32 px is the smallest input the keras.applications backbones accept.
    model = build_model(backbone, 3, 32, weights="none")
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)

    probabilities = np.asarray(model(images, training=False))

    assert probabilities.shape == (2, 3)
    assert np.all((probabilities >= 0.0) & (probabilities <= 1.0))


def test_model_records_its_label_count_and_image_size(tiny_model: keras.Model) -> None:
    assert model_num_labels(tiny_model) == 2
    assert model_image_size(tiny_model) == 32
    assert "2_labels" in tiny_model.name
    assert tiny_model.get_layer("probabilities").units == 2


@pytest.mark.parametrize("num_labels", [0, -1])
def test_fewer_than_one_label_is_rejected(num_labels: int) -> None:
    with pytest.raises(ValueError, match="num_labels must be at least 1"):
        build_model("compact_cnn", num_labels, 32)


def test_uint8_and_float_batches_give_the_same_probabilities(
    tiny_model: keras.Model, uint8_batch: np.ndarray
) -> None:
    from_uint8 = np.asarray(tiny_model(uint8_batch, training=False))
    from_float = np.asarray(tiny_model(uint8_batch.astype(np.float32), training=False))

    np.testing.assert_array_equal(from_uint8, from_float)


def test_model_resizes_inputs_of_another_size_itself(tiny_model: keras.Model) -> None:
    large = np.random.default_rng(1).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    resized = tf.image.resize(large.astype(np.float32), (32, 32), antialias=True)

    from_large = np.asarray(tiny_model(large, training=False))
    from_resized = np.asarray(tiny_model(resized, training=False))

    np.testing.assert_allclose(from_large, from_resized, rtol=1e-5, atol=1e-6)


def test_predictor_gives_the_same_numbers_as_calling_the_model(
    tiny_model: keras.Model, uint8_batch: np.ndarray
) -> None:
    predictor = Predictor(tiny_model, batch_size=2)

    predicted = predictor.predict(uint8_batch)

    expected = np.asarray(tiny_model(uint8_batch, training=False))
    assert predicted.dtype == np.float32
    assert predicted.shape == (5, 2)
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)


def test_predictor_traces_once_for_batches_of_any_count(
    tiny_model: keras.Model, uint8_batch: np.ndarray
) -> None:
    predictor = Predictor(tiny_model, batch_size=4)

    for count in (5, 1, 3, 8):
        assert predictor.predict(uint8_batch[np.arange(count) % 5]).shape == (count, 2)

    assert predictor._forward.experimental_get_tracing_count() == 1


def test_predictor_returns_no_rows_for_no_images(tiny_model: keras.Model) -> None:
    predictor = Predictor(tiny_model, batch_size=4)

    assert predictor.predict(np.zeros((0, 32, 32, 3), dtype=np.uint8)).shape == (0, 2)


def test_predictor_refuses_images_of_the_wrong_size(tiny_model: keras.Model) -> None:
    predictor = Predictor(tiny_model, batch_size=4)

    with pytest.raises(ValueError, match="decode them at size 32"):
        predictor.predict(np.zeros((2, 40, 40, 3), dtype=np.uint8))


def test_head_pools_the_upper_and_lower_halves_of_the_features_apart() -> None:
    features = keras.Input((4, 3, 2))
    pooled = keras.Model(features, _pool_upper_and_lower_halves(features))
    upper_ones = np.zeros((1, 4, 3, 2), dtype=np.float32)
    upper_ones[:, :2] = 1.0

    halves = np.asarray(pooled(upper_ones))

    np.testing.assert_array_equal(halves, [[1.0, 1.0, 0.0, 0.0]])
