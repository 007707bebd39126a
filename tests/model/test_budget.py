"""The training time budget: epochs planned to fit it, a stop before it, a clear refusal."""

from __future__ import annotations

import time

import keras
import pytest

from mlc_core.errors import TrainingBudgetTooSmall
from mlc_core.model.budget import EpochPlan, PlannedCosineSchedule
from mlc_core.model.dataset import make_training_dataset
from mlc_core.model.losses import make_loss
from mlc_core.model.metrics import mean_average_precision
from mlc_core.model.predict import Predictor
from mlc_core.model.training import train_model
from tests.model.conftest import SquareImages


def test_the_plan_fits_the_epochs_the_first_ones_show_there_is_time_for() -> None:
    plan = EpochPlan(most_epochs=100, budget_seconds=60.0)

    assert plan.after_epoch(1, elapsed=12.0, epoch_seconds=12.0)
    assert plan.planned_epochs == 1 + int((57.0 - 12.0) // 12.0)
    assert plan.after_epoch(2, elapsed=20.0, epoch_seconds=8.0)
    assert plan.planned_epochs == 2 + int((57.0 - 20.0) // 8.0)
    assert not plan.after_epoch(plan.planned_epochs, elapsed=55.0, epoch_seconds=8.0)
    assert plan.stopped_at_budget


def test_a_slow_epoch_stops_training_before_it_would_pass_the_budget() -> None:
    plan = EpochPlan(most_epochs=100, budget_seconds=60.0)
    plan.after_epoch(1, elapsed=5.0, epoch_seconds=5.0)
    plan.after_epoch(2, elapsed=10.0, epoch_seconds=5.0)

    assert not plan.after_epoch(3, elapsed=40.0, epoch_seconds=30.0)
    assert plan.stopped_at_budget


def test_without_a_budget_the_plan_is_the_settings_epochs() -> None:
    plan = EpochPlan(most_epochs=3, budget_seconds=None)

    assert plan.after_epoch(1, elapsed=1e6, epoch_seconds=1e6)
    assert not plan.after_epoch(3, elapsed=1e6, epoch_seconds=1.0)
    assert plan.planned_epochs == 3 and not plan.stopped_at_budget


def test_a_budget_shorter_than_one_epoch_is_one_clear_sentence() -> None:
    plan = EpochPlan(most_epochs=10, budget_seconds=6.0)

    with pytest.raises(TrainingBudgetTooSmall) as caught:
        plan.after_epoch(1, elapsed=42.0, epoch_seconds=42.0)

    assert "MLC_TRAINING__TIME_BUDGET_MINUTES" in str(caught.value)
    assert "(42 s)" in str(caught.value) and "no model was written" in str(caught.value)


def test_the_replanned_schedule_decays_over_the_planned_steps() -> None:
    schedule = PlannedCosineSchedule(1e-2, total_steps=1000)
    schedule.replan(100)

    assert float(schedule(100)) == pytest.approx(1e-4, rel=1e-3)
    assert float(schedule(5)) == pytest.approx(1e-2, rel=1e-3)
    assert float(schedule(0)) == pytest.approx(1e-3, rel=1e-3)


def _minimal_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="sigmoid")(x))


def test_training_stops_at_the_budget_holding_its_best_epoch(square_images: SquareImages) -> None:
    model = _minimal_model()
    images, labels = square_images(24, 0)
    validation_images, validation_labels = square_images(8, 1)
    started = time.perf_counter()

    outcome = train_model(
        model,
        make_training_dataset(images, labels, batch_size=8, seed=0, augment=False),
        validation_images,
        validation_labels,
        epochs=10_000,
        learning_rate=1e-2,
        loss=make_loss("bce"),
        patience=10_000,
        seed=0,
        time_budget_seconds=4.0,
        started=started,
    )

    assert outcome.stopped_at_budget and outcome.epochs_run < 10_000
    assert outcome.planned_epochs < 10_000 and outcome.budget_seconds == 4.0
    # An epoch here takes milliseconds: the stop comes before the budget, not long after it.
    assert outcome.seconds <= 4.0 + 1.0
    best = outcome.history[outcome.best_epoch - 1]
    restored = Predictor(model, batch_size=8).predict(validation_images)
    assert mean_average_precision(validation_labels, restored) == pytest.approx(best.validation_map)


def test_a_budget_that_ran_out_in_the_first_epoch_stops_training(
    square_images: SquareImages,
) -> None:
    images, labels = square_images(8, 0)

    with pytest.raises(TrainingBudgetTooSmall):
        train_model(
            _minimal_model(),
            make_training_dataset(images, labels, batch_size=8, seed=0, augment=False),
            images,
            labels,
            epochs=5,
            learning_rate=1e-2,
            loss=make_loss("bce"),
            patience=5,
            seed=0,
            time_budget_seconds=1e-3,
        )
