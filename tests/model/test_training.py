from __future__ import annotations

import keras
import numpy as np
import pytest

from mlc_core.model.dataset import DecodedImages, make_training_dataset
from mlc_core.model.losses import WeightedBinaryCrossentropy, make_loss
from mlc_core.model.metrics import evaluate_predictions, mean_average_precision
from mlc_core.model.predict import Predictor
from mlc_core.model.split import DataSplit
from mlc_core.model.thresholds import calibrate_thresholds
from mlc_core.model.training import EpochReport, fit_and_calibrate, train_model
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
    assert fitted.metrics == evaluate_predictions(
        labels[test_rows],
        fitted.predictor.predict(images[test_rows]),
        fitted.thresholds,
        ["red", "blue"],
    )


def test_weighted_loss_weighs_missed_positives_of_a_rare_class_more() -> None:
    loss = make_loss("weighted_bce", np.array([0.5, 0.1]))
    missed_common = float(loss(np.array([[1.0, 0.0]]), np.array([[0.2, 0.0]])))
    missed_rare = float(loss(np.array([[0.0, 1.0]]), np.array([[0.0, 0.2]])))

    assert isinstance(loss, WeightedBinaryCrossentropy)
    assert loss.positive_weights == pytest.approx([1.0, 9.0])
    assert missed_rare == pytest.approx(9 * missed_common, rel=1e-4)


def test_weighted_loss_needs_positive_rates() -> None:
    with pytest.raises(ValueError, match="positive rate of each class"):
        make_loss("weighted_bce")


def test_focal_and_plain_losses_are_the_keras_ones() -> None:
    assert isinstance(make_loss("focal"), keras.losses.BinaryFocalCrossentropy)
    assert isinstance(make_loss("bce"), keras.losses.BinaryCrossentropy)


def test_unknown_loss_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected one of bce, weighted_bce, focal"):
        make_loss("hinge")  # type: ignore[arg-type]
