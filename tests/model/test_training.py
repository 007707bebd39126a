from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mlc_core.jobs.scoring.drift import drift_basis_of
from mlc_core.model.build import model_image_size
from mlc_core.model.dataset import DecodedImages, make_training_dataset
from mlc_core.model.losses import make_loss
from mlc_core.model.metrics import evaluate_predictions, mean_average_precision
from mlc_core.model.predict import Predictor
from mlc_core.model.recipe import fit_and_calibrate
from mlc_core.model.split import DataSplit
from mlc_core.model.thresholds import calibrate_thresholds
from mlc_core.model.training import EpochReport, train_model
from mlc_core.settings import TrainingSettings
from tests.model.conftest import SquareImages


def test_training_reduces_the_loss_on_red_versus_blue_squares(
    tiny_model: keras.Model, square_images: SquareImages
) -> None:
    images, labels = square_images(24, 0)
    validation_images, validation_labels = square_images(8, 1)
    reports: list[EpochReport] = []

    outcome = train_model(
        tiny_model,
        make_training_dataset(images, labels, batch_size=8, seed=0, augment=True),
        validation_images,
        validation_labels,
        epochs=3,
        learning_rate=1e-2,
        loss=make_loss("bce"),
        patience=3,
        seed=0,
        on_epoch_end=reports.append,
    )

    assert outcome.epochs_run == 3
    assert reports == outcome.history
    assert [report.epoch for report in reports] == [1, 2, 3]
    assert all(report.epochs == 3 and report.seconds > 0 for report in reports)
    assert reports[-1].loss < reports[0].loss
    assert outcome.history[outcome.best_epoch - 1].validation_map == max(
        report.validation_map for report in reports
    )


def _minimal_model() -> keras.Model:
    """A model that traces in a fraction of compact_cnn's time; the loop is what is tested."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="sigmoid")(x))


def test_early_stopping_restores_the_weights_of_the_best_epoch(
    square_images: SquareImages,
) -> None:
    model = _minimal_model()
    images, labels = square_images(24, 0)
    # Validation labels swapped: the better the model learns the training task, the worse
    # its validation mAP, so the first epoch is the best one and training stops early.
    validation_images, validation_labels = square_images(8, 1)
    swapped = validation_labels[:, ::-1].copy()

    outcome = train_model(
        model,
        make_training_dataset(images, labels, batch_size=8, seed=0, augment=False),
        validation_images,
        swapped,
        epochs=6,
        learning_rate=1e-2,
        loss=make_loss("bce"),
        patience=1,
        seed=0,
    )

    best = outcome.history[outcome.best_epoch - 1]
    assert outcome.epochs_run < 6
    assert outcome.epochs_run == outcome.best_epoch + 1
    restored = Predictor(model, batch_size=8).predict(validation_images)
    assert mean_average_precision(swapped, restored) == pytest.approx(best.validation_map)


def test_fit_and_calibrate_calibrates_on_validation_rows_and_evaluates_test_rows(
    square_images: SquareImages,
) -> None:
    images, labels = square_images(36, 0)
    keys = [f"image-{index:02d}" for index in range(len(images))]
    # Parts that interleave the rows, so a mix-up of keys and rows would show.
    split = DataSplit(train=keys[0::3] + keys[1::3][:6], validation=keys[1::3][6:], test=keys[2::3])
    settings = TrainingSettings(image_size=32, epochs=2, batch_size=8, seed=0)
    reports: list[EpochReport] = []

    fitted = fit_and_calibrate(
        DecodedImages(keys, images),
        labels,
        split,
        ["red", "blue"],
        settings,
        on_epoch_end=reports.append,
    )

    validation_rows = np.arange(len(keys))[1::3][6:]
    test_rows = np.arange(len(keys))[2::3]
    calibration = calibrate_thresholds(
        labels[validation_rows],
        fitted.predictor.predict(images[validation_rows]),
        classes=["red", "blue"],
    )
    assert fitted.outcome.epochs_run == 2
    assert reports == fitted.outcome.history
    assert fitted.predictor.model is fitted.model
    assert fitted.thresholds == calibration.thresholds
    assert fitted.threshold_notes == calibration.notes
    tag_rates = fitted.metrics.pop("validation_tag_rates")
    assert fitted.metrics == evaluate_predictions(
        labels[test_rows],
        fitted.predictor.predict(images[test_rows]),
        fitted.thresholds,
        ["red", "blue"],
    )
    tagged = fitted.predictor.predict(images[validation_rows]) >= np.array(fitted.thresholds)
    assert tag_rates == pytest.approx(dict(zip(["red", "blue"], tagged.mean(axis=0), strict=True)))
    basis = drift_basis_of({"validation_tag_rates": tag_rates}, psi_limit=0.2, min_images=10)
    assert basis is not None


def test_weighted_loss_weighs_missed_positives_of_a_rare_class_more() -> None:
    loss = make_loss("weighted_bce", np.array([0.5, 0.1]))
    missed_common = float(loss(np.array([[1.0, 0.0]]), np.array([[0.2, 0.0]])))
    missed_rare = float(loss(np.array([[0.0, 1.0]]), np.array([[0.0, 0.2]])))

    assert loss.positive_weights == pytest.approx([1.0, 9.0])
    assert missed_rare == pytest.approx(9 * missed_common, rel=1e-4)


def test_weighted_loss_needs_positive_rates() -> None:
    with pytest.raises(ValueError, match="positive rate of each class"):
        make_loss("weighted_bce")


def test_plain_and_focal_losses_equal_the_keras_ones_on_closed_world_labels() -> None:
    truth = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    predicted = np.array([[0.7, 0.2, 0.4], [0.1, 0.6, 0.9]])

    plain = float(make_loss("bce")(truth, predicted))
    focal = float(make_loss("focal")(truth, predicted))

    assert plain == pytest.approx(float(keras.losses.BinaryCrossentropy()(truth, predicted)))
    expected_focal = keras.losses.BinaryFocalCrossentropy(gamma=2.0)(truth, predicted)
    assert focal == pytest.approx(float(expected_focal), rel=1e-5)


@pytest.mark.parametrize("kind", ["bce", "weighted_bce", "focal", "asymmetric"])
def test_a_masked_loss_equals_the_same_loss_over_the_known_entries_only(kind: str) -> None:
    loss = make_loss(kind, np.array([0.5, 0.2, 0.1]))  # type: ignore[arg-type]
    truth = np.array([[1.0, np.nan, 0.0], [np.nan, 1.0, 1.0]], dtype=np.float32)
    predicted = np.array([[0.7, 0.01, 0.4], [0.99, 0.3, 0.05]], dtype=np.float32)
    # The unknown entries replaced by their opposite would change an unmasked loss a lot.
    flipped = np.where(np.isnan(truth), 1.0 - np.round(predicted), truth)

    masked = float(loss(truth, predicted))

    # Image 0 knows classes 0 and 2, image 1 classes 1 and 2: the same loss on those
    # entries alone (two columns each, so the weights and the mean carry over unchanged)
    # is the loss of a batch where the unknown entries cost exactly nothing.
    known_only = (
        float(_loss_on(kind, [0, 2])(flipped[:1, [0, 2]], predicted[:1, [0, 2]]))
        + float(_loss_on(kind, [1, 2])(flipped[1:, [1, 2]], predicted[1:, [1, 2]]))
    ) / 2
    assert masked == pytest.approx(known_only, rel=1e-5)
    assert masked != pytest.approx(float(loss(flipped, predicted)), rel=1e-3)


def _loss_on(kind: str, columns: list[int]) -> keras.losses.Loss:
    return make_loss(kind, np.array([0.5, 0.2, 0.1])[columns])  # type: ignore[arg-type]


def test_an_image_with_no_known_label_adds_nothing_to_the_loss() -> None:
    loss = make_loss("bce")
    truth = np.array([[1.0, 0.0], [np.nan, np.nan]], dtype=np.float32)
    predicted = np.array([[0.8, 0.3], [0.1, 0.9]], dtype=np.float32)

    assert float(loss(truth, predicted)) == pytest.approx(
        float(keras.losses.BinaryCrossentropy()(truth[:1], predicted[:1])) / 2, rel=1e-5
    )


def test_the_asymmetric_loss_ignores_negatives_below_its_margin() -> None:
    loss = make_loss("asymmetric")
    assert float(loss(np.array([[0.0, 0.0]]), np.array([[0.04, 0.01]]))) == pytest.approx(0.0)
    assert float(loss(np.array([[0.0]]), np.array([[0.6]]))) > 0


def test_unknown_loss_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected one of bce, weighted_bce, focal"):
        make_loss("hinge")  # type: ignore[arg-type]


def _squares_at(images: np.ndarray, size: int) -> np.ndarray:
    """The same square images at another side, as decoding the same photo larger gives."""
    return np.asarray(tf.cast(tf.image.resize(images, (size, size), method="nearest"), tf.uint8))


def test_a_model_that_scores_larger_than_it_trains_is_calibrated_and_judged_at_that_size(
    square_images: SquareImages,
) -> None:
    small, labels = square_images(36, 0)
    images = _squares_at(small, 64)
    keys = [f"image-{index:02d}" for index in range(len(images))]
    split = DataSplit(train=keys[:24], validation=keys[24:30], test=keys[30:])
    settings = TrainingSettings(image_size=64, scoring_scale=2, epochs=2, batch_size=8, seed=0)
    assert settings.scoring_image_size == 128
    # Validation and test only, in another order than the training images.
    held_out = keys[24:][::-1]
    large = _squares_at(small[24:][::-1], 128)

    fitted = fit_and_calibrate(
        DecodedImages(keys, images),
        labels,
        split,
        ["red", "blue"],
        settings,
        scoring=DecodedImages(held_out, large),
    )

    assert model_image_size(fitted.model) == 128
    assert fitted.predictor.image_size == 128
    position = {key: row for row, key in enumerate(held_out)}
    validation = [position[key] for key in split.validation]
    test = [position[key] for key in split.test]
    calibration = calibrate_thresholds(
        labels[24:30], fitted.predictor.predict(large[validation]), classes=["red", "blue"]
    )
    assert fitted.thresholds == calibration.thresholds
    fitted.metrics.pop("validation_tag_rates")
    assert fitted.metrics == evaluate_predictions(
        labels[30:], fitted.predictor.predict(large[test]), fitted.thresholds, ["red", "blue"]
    )


def test_a_model_that_scores_larger_needs_its_held_out_images_at_that_size(
    square_images: SquareImages,
) -> None:
    images, labels = square_images(12, 0)
    keys = [f"image-{index:02d}" for index in range(len(images))]
    settings = TrainingSettings(image_size=32, scoring_scale=2, epochs=1, batch_size=8)
    split = DataSplit(keys[:8], keys[8:10], keys[10:])
    decoded = DecodedImages(keys, images)

    with pytest.raises(ValueError, match="scores at 64 px"):
        fit_and_calibrate(decoded, labels, split, ["red", "blue"], settings)
    # 32 px ends in a one-row feature map, 64 px in two: the weights would not fit.
    with pytest.raises(ValueError, match="trained at 32 px cannot score at 64 px"):
        fit_and_calibrate(
            decoded,
            labels,
            split,
            ["red", "blue"],
            settings,
            scoring=DecodedImages(keys, _squares_at(images, 64)),
        )


@pytest.mark.parametrize(
    ("image_size", "scale", "scoring_size"),
    [(128, 1.25, 160), (96, 1.25, 96), (32, 1.25, 32), (224, 1.25, 256), (100, 2, 192)],
)
def test_the_scoring_size_is_a_multiple_of_32_never_below_the_training_size(
    image_size: int, scale: float, scoring_size: int
) -> None:
    settings = TrainingSettings(image_size=image_size, scoring_scale=scale)
    assert settings.scoring_image_size == scoring_size
