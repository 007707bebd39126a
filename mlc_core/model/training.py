"""Fit a model with early stopping on validation mean average precision.

:func:`train_model` is the training loop; :func:`mlc_core.model.recipe.fit_and_calibrate` is
the whole recipe around it that the train job and the quality benchmark share.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from mlc_core.model.backbones import require_tensorflow_backend
from mlc_core.model.budget import EpochPlan, PlannedCosineSchedule
from mlc_core.model.build import build_model
from mlc_core.model.dataset import make_training_dataset
from mlc_core.model.losses import make_loss
from mlc_core.model.metrics import mean_average_precision

if TYPE_CHECKING:
    from mlc_core.settings import TrainingSettings

logger = logging.getLogger(__name__)

VALIDATION_BATCH_SIZE = 64
# Decoupled weight decay (scaled by the learning rate in AdamW, so about 4e-4 per step at the
# peak rate). On natural_scene (1,300 training images, from scratch) 0.2 together with
# stronger crops and dropout 0.3 generalized better than 0.05. Norm scales and biases are
# exempt.
WEIGHT_DECAY = 0.2


@dataclass
class EpochReport:
    """What happened in one epoch; ``epoch`` counts from 1."""

    epoch: int
    epochs: int  # the epochs planned at this point (a time budget may cut them)
    loss: float
    validation_loss: float
    validation_map: float | None
    seconds: float
    # Which of several trainings in one run this epoch belongs to ("student 1 of 2"); empty
    # when the run trains one model. Semi-supervised runs train several, each from epoch 1.
    model: str = ""


@dataclass
class TrainingOutcome:
    """The result of :func:`train_model`; the model holds the weights of ``best_epoch``."""

    best_epoch: int
    epochs_run: int
    history: list[EpochReport]
    seconds: float
    planned_epochs: int = 0
    budget_seconds: float | None = None
    stopped_at_budget: bool = False


def row_indices(keys: Sequence[str], wanted: Iterable[str]) -> np.ndarray:
    """Return the positions in ``keys`` of the ``wanted`` keys, in the order of ``wanted``."""
    position = {key: row for row, key in enumerate(keys)}
    return np.array([position[key] for key in wanted], dtype=np.int64)


class _EarlyStoppingOnMap(keras.callbacks.Callback):
    """Scores the validation set after each epoch, reports, and keeps the best weights."""

    def __init__(
        self,
        validation_images: np.ndarray,
        validation_labels: np.ndarray,
        loss: keras.losses.Loss,
        plan: EpochPlan,
        patience: int,
        on_epoch_end: Callable[[EpochReport], None] | None,
        schedule: PlannedCosineSchedule | None,
        steps_per_epoch: int,
    ) -> None:
        super().__init__()
        self.plan = plan
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch
        self.training_started = time.perf_counter()
        self.validation_images = validation_images
        self.validation_labels = validation_labels.astype(np.float32, copy=False)
        self.loss = loss
        self.patience = patience
        self.report = on_epoch_end
        self.history: list[EpochReport] = []
        self.best_score = -math.inf
        self.best_epoch = 0
        self.best_weights: list[np.ndarray] | None = None
        self.epochs_without_improvement = 0
        self.epoch_started = 0.0
        self._forward: Callable[[tf.Tensor], tf.Tensor] | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch_started = time.perf_counter()

    def _predict(self) -> np.ndarray:
        if self._forward is None:
            model = self.model

            @tf.function(reduce_retracing=True)
            def forward(images: tf.Tensor) -> tf.Tensor:
                return model(tf.cast(images, tf.float32), training=False)

            self._forward = forward
        chunks = [
            np.asarray(
                self._forward(tf.constant(self.validation_images[i : i + VALIDATION_BATCH_SIZE]))
            )
            for i in range(0, len(self.validation_images), VALIDATION_BATCH_SIZE)
        ]
        return np.concatenate(chunks).astype(np.float32)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        probabilities = self._predict()
        validation_loss = float(self.loss(self.validation_labels, probabilities))
        validation_map = mean_average_precision(self.validation_labels, probabilities)
        report = EpochReport(
            epoch=epoch + 1,
            epochs=self.plan.planned_epochs,
            loss=float((logs or {}).get("loss", math.nan)),
            validation_loss=validation_loss,
            validation_map=validation_map,
            seconds=time.perf_counter() - self.epoch_started,
        )
        self.history.append(report)
        logger.info(
            "epoch %d/%d: loss %.4f, validation loss %.4f, validation mAP %s",
            report.epoch,
            report.epochs,
            report.loss,
            report.validation_loss,
            "-" if report.validation_map is None else f"{report.validation_map:.4f}",
        )
        # mAP is undefined when no validation image has any label; the loss then decides.
        score = validation_map if validation_map is not None else -validation_loss
        if score > self.best_score:
            self.best_score = score
            self.best_epoch = report.epoch
            self.best_weights = self.model.get_weights()
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
            if self.epochs_without_improvement >= self.patience:
                self.model.stop_training = True
        planned = self.plan.planned_epochs
        elapsed = time.perf_counter() - self.training_started
        if not self.plan.after_epoch(report.epoch, elapsed, report.seconds):
            self.model.stop_training = True
        if self.schedule is not None and self.plan.planned_epochs != planned:
            self.schedule.replan(self.plan.planned_epochs * self.steps_per_epoch)
            logger.info(
                "time budget: %d epochs planned (%.0f s an epoch)",
                self.plan.planned_epochs,
                report.seconds,
            )
        if self.report is not None:
            self.report(report)


def train_model(
    model: keras.Model,
    train: tf.data.Dataset,
    validation_images: np.ndarray,
    validation_labels: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    loss: keras.losses.Loss,
    patience: int,
    seed: int,
    on_epoch_end: Callable[[EpochReport], None] | None = None,
    time_budget_seconds: float | None = None,
    started: float | None = None,
) -> TrainingOutcome:
    """Train ``model`` in place and leave it holding the weights of its best epoch.

    The optimizer is AdamW (weight decay 0.2, not on norm scales or biases) with a linear
    warmup over the first 5% of the planned steps, then cosine decay to 1% of
    ``learning_rate``. After every epoch the validation images are scored; training stops
    once validation mAP (mean over classes with a positive of average precision) has not
    improved for ``patience`` epochs, and the weights of the best epoch are restored.

    With ``time_budget_seconds``, the first epochs are timed and the epochs planned to fit
    the budget (:mod:`mlc_core.model.budget`); the schedule decays over the planned epochs and
    training stops before an epoch would end past the budget, keeping the best epoch.

    Python, NumPy and TensorFlow are seeded with ``seed`` first; for identical initial
    weights, seed before building the model too.

    Args:
        model: an uncompiled (or to-be-recompiled) model with sigmoid outputs.
        train: a finite dataset of ``(images, labels)`` batches; one pass is one epoch.
        validation_images: uint8 ``(N, S, S, 3)``.
        validation_labels: multi-hot ``(N, num_labels)``.
        epochs: the most epochs to run.
        learning_rate: the peak learning rate.
        loss: the training loss, e.g. from :func:`mlc_core.model.losses.make_loss`.
        patience: epochs without improvement before stopping.
        seed: seeds every random number generator involved.
        on_epoch_end: called with each epoch's report, e.g. to draw progress.
        time_budget_seconds: the most the training loop may take; ``None`` for no limit.
        started: a ``time.perf_counter()`` reading the budget counts from (default: now).

    Returns:
        The best epoch, how many epochs ran and were planned, every epoch's report, the total
        time and whether the budget stopped training.

    Raises:
        ValueError: ``epochs``, ``patience`` or the validation arrays are unusable.
        TrainingBudgetTooSmall: the first epoch ended past the budget.
    """
    require_tensorflow_backend()
    _check_arguments(epochs, patience, validation_images, validation_labels)
    started = time.perf_counter() if started is None else started
    keras.utils.set_random_seed(seed)
    steps_per_epoch = int(train.cardinality())
    schedule = _compile(model, loss, learning_rate, steps_per_epoch, epochs)
    plan = EpochPlan(epochs, time_budget_seconds)
    monitor = _EarlyStoppingOnMap(
        validation_images,
        validation_labels,
        loss,
        plan,
        patience,
        on_epoch_end,
        schedule,
        steps_per_epoch,
    )
    monitor.training_started = started
    model.fit(train, epochs=epochs, verbose=0, shuffle=False, callbacks=[monitor])
    if monitor.best_weights is not None:
        model.set_weights(monitor.best_weights)
    return TrainingOutcome(
        best_epoch=monitor.best_epoch,
        epochs_run=len(monitor.history),
        history=monitor.history,
        seconds=time.perf_counter() - started,
        planned_epochs=plan.planned_epochs,
        budget_seconds=time_budget_seconds,
        stopped_at_budget=plan.stopped_at_budget,
    )


def _check_arguments(
    epochs: int, patience: int, validation_images: np.ndarray, validation_labels: np.ndarray
) -> None:
    if epochs < 1 or patience < 1:
        raise ValueError(f"epochs and patience must be at least 1, got {epochs} and {patience}")
    if len(validation_images) == 0 or len(validation_images) != len(validation_labels):
        raise ValueError(
            f"expected as many validation images as label rows (at least 1), got "
            f"{len(validation_images)} images and {len(validation_labels)} label rows"
        )


def _compile(
    model: keras.Model,
    loss: keras.losses.Loss,
    learning_rate: float,
    steps_per_epoch: int,
    epochs: int,
) -> PlannedCosineSchedule | None:
    # Unknown dataset length: without a step count there is no schedule to plan.
    schedule = (
        PlannedCosineSchedule(learning_rate, steps_per_epoch * epochs)
        if steps_per_epoch >= 1
        else None
    )
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate if schedule is None else schedule,
        weight_decay=WEIGHT_DECAY,
    )
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(optimizer=optimizer, loss=loss, jit_compile=False)
    return schedule


def _positive_rates(labels: np.ndarray) -> np.ndarray:
    """Per class, the share of positives among the images where it is known (0 if none)."""
    known = ~np.isnan(labels)
    positives = np.where(known, labels, 0.0).sum(axis=0)
    return positives / np.maximum(known.sum(axis=0), 1)


def build_and_train(
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    settings: TrainingSettings,
    on_epoch_end: Callable[[EpochReport], None] | None,
    started: float,
    time_budget_seconds: float | None = None,
    *,
    strong: bool = False,
) -> tuple[keras.Model, TrainingOutcome]:
    keras.utils.set_random_seed(settings.seed)
    model = build_model(
        settings.backbone,
        train[1].shape[1],
        settings.image_size,
        weights=settings.weights,
        dropout_rate=settings.dropout_rate,
    )
    loss = make_loss(settings.loss, positive_rates=_positive_rates(train[1]))
    outcome = train_model(
        model,
        make_training_dataset(
            train[0],
            train[1],
            batch_size=settings.batch_size,
            seed=settings.seed,
            augment=True,
            strong=strong,
            min_crop_fraction=settings.min_crop_fraction,
            mixup_alpha=settings.mixup_alpha,
        ),
        validation[0],
        validation[1],
        epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        loss=loss,
        patience=settings.early_stopping_patience,
        seed=settings.seed,
        on_epoch_end=on_epoch_end,
        time_budget_seconds=time_budget_seconds
        if time_budget_seconds is not None
        else budget_seconds(settings),
        started=started,
    )
    return model, outcome


def budget_seconds(settings: TrainingSettings) -> float | None:
    """The training time budget in seconds, ``None`` without one."""
    minutes = settings.time_budget_minutes
    return None if minutes is None else minutes * 60.0
