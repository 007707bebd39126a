"""A training time budget: plan the epochs that fit, and a learning rate schedule that follows.

A nightly or weekly schedule needs training to end when it says. The first epoch is timed and
the number of epochs planned to fit what is left of the budget (the cosine schedule is then
stretched over exactly those epochs, so the learning rate still ends low); the second epoch,
free of the one-time tracing of the first, refines the plan once. After every epoch, training
stops when another epoch of the length just seen would pass the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from mlc_core.errors import TrainingBudgetTooSmall

WARMUP_FRACTION = 0.05
FINAL_LEARNING_RATE_FRACTION = 0.01
# Epoch times wander on a shared machine; planning to 95% keeps the end inside the budget.
PLANNING_SHARE = 0.95


@keras.saving.register_keras_serializable(package="mlc")
class PlannedCosineSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warmup then cosine decay over a number of steps that can be re-planned.

    The same curve as ``keras.optimizers.schedules.CosineDecay`` with warmup: from 10% of the
    peak to the peak over the first 5% of the steps, then down to 1% of the peak. The total is
    a variable, so a time budget can shorten (or lengthen) the run it decays over.
    """

    def __init__(self, peak_learning_rate: float, total_steps: int) -> None:
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = tf.Variable(float(max(total_steps, 1)), trainable=False)

    def replan(self, total_steps: int) -> None:
        self.total_steps.assign(float(max(total_steps, 1)))

    def __call__(self, step: Any) -> Any:
        step = tf.cast(step, tf.float32)
        total = self.total_steps
        warmup = tf.floor(total * WARMUP_FRACTION)
        peak = self.peak_learning_rate
        start = peak * 0.1
        warming = start + (peak - start) * step / tf.maximum(warmup, 1.0)
        decay_steps = tf.maximum(total - warmup, 1.0)
        progress = tf.minimum(tf.maximum(step - warmup, 0.0), decay_steps) / decay_steps
        cosine = 0.5 * (1.0 + tf.cos(math.pi * progress))
        floor = FINAL_LEARNING_RATE_FRACTION
        decayed = peak * ((1.0 - floor) * cosine + floor)
        return tf.where(step < warmup, warming, decayed)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": int(self.total_steps.numpy()),
        }


@dataclass
class EpochPlan:
    """How many epochs to run: the settings' most, cut to what a time budget allows.

    Attributes:
        most_epochs: the epochs the settings ask for.
        budget_seconds: the whole training loop's budget, ``None`` for no budget.
        planned_epochs: the current plan (``most_epochs`` until an epoch was timed).
    """

    most_epochs: int
    budget_seconds: float | None
    planned_epochs: int = 0
    stopped_at_budget: bool = False

    def __post_init__(self) -> None:
        self.planned_epochs = self.most_epochs

    def after_epoch(self, epochs_done: int, elapsed: float, epoch_seconds: float) -> bool:
        """Update the plan after an epoch; return whether to train another one.

        Raises:
            TrainingBudgetTooSmall: the first epoch alone took longer than the budget.
        """
        budget = self.budget_seconds
        if budget is None:
            return epochs_done < self.most_epochs
        if epochs_done == 1 and elapsed > budget:
            raise TrainingBudgetTooSmall(budget, elapsed)
        if epochs_done <= 2:
            affordable = epochs_done + int((budget * PLANNING_SHARE - elapsed) // epoch_seconds)
            self.planned_epochs = max(epochs_done, min(self.most_epochs, affordable))
        if epochs_done >= self.planned_epochs:
            self.stopped_at_budget = self.planned_epochs < self.most_epochs
            return False
        if elapsed + epoch_seconds > budget:
            self.stopped_at_budget = True
            return False
        return True
