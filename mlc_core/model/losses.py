"""Training losses for multilabel sigmoid outputs."""

from __future__ import annotations

from typing import Any, Literal

import keras
import numpy as np

LossKind = Literal["bce", "weighted_bce", "focal"]
LOSS_KINDS: tuple[str, ...] = ("bce", "weighted_bce", "focal")
# Bounds on a positive's weight (1 - p) / p: a class seen in 1 of 1000 images would otherwise
# weigh ~1000 times a negative and its gradients would swamp every other class.
MIN_POSITIVE_WEIGHT = 0.05
MAX_POSITIVE_WEIGHT = 20.0


@keras.saving.register_keras_serializable(package="mlc")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy whose positive terms are weighted per class.

    Registered as serializable so a model compiled with it still saves and loads (in safe
    mode) with its compile configuration.
    """

    def __init__(
        self,
        positive_weights: list[float],
        name: str = "weighted_binary_crossentropy",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.positive_weights = [float(weight) for weight in positive_weights]

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        epsilon = keras.config.epsilon()
        y_pred = keras.ops.clip(y_pred, epsilon, 1.0 - epsilon)
        weights = keras.ops.convert_to_tensor(self.positive_weights, dtype=y_pred.dtype)
        per_class = -(
            weights * y_true * keras.ops.log(y_pred) + (1.0 - y_true) * keras.ops.log(1.0 - y_pred)
        )
        return keras.ops.mean(per_class, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "positive_weights": self.positive_weights}


def positive_weights(positive_rates: np.ndarray) -> np.ndarray:
    """Return ``(1 - p) / p`` per class, clipped to [MIN_POSITIVE_WEIGHT, MAX_POSITIVE_WEIGHT]."""
    rates = np.clip(np.asarray(positive_rates, dtype=np.float64), 1e-6, 1.0 - 1e-6)
    return np.clip((1.0 - rates) / rates, MIN_POSITIVE_WEIGHT, MAX_POSITIVE_WEIGHT)


def make_loss(kind: LossKind, positive_rates: np.ndarray | None = None) -> keras.losses.Loss:
    """Return the training loss named ``kind``.

    Args:
        kind: ``"bce"`` (plain binary cross-entropy), ``"weighted_bce"`` (positives of class
            ``c`` weighted by ``(1 - p_c) / p_c``, clipped to [0.05, 20], so rare classes are
            not drowned by their negatives) or ``"focal"`` (binary focal cross-entropy,
            gamma 2, which down-weights examples the model already gets right).
        positive_rates: the fraction of training images that have each class; required for
            ``"weighted_bce"``, ignored otherwise.

    Raises:
        ValueError: an unknown kind, or ``"weighted_bce"`` without valid positive rates.
    """
    if kind == "bce":
        return keras.losses.BinaryCrossentropy()
    if kind == "focal":
        return keras.losses.BinaryFocalCrossentropy(gamma=2.0)
    if kind == "weighted_bce":
        if positive_rates is None:
            raise ValueError("the weighted_bce loss needs the positive rate of each class")
        rates = np.asarray(positive_rates, dtype=np.float64)
        if rates.ndim != 1 or rates.size == 0 or np.any((rates < 0) | (rates > 1)):
            raise ValueError(
                f"positive rates must be a non-empty vector of fractions in [0, 1], got {rates}"
            )
        return WeightedBinaryCrossentropy(positive_weights(rates).tolist())
    raise ValueError(f"unknown loss {kind!r}; expected one of {', '.join(LOSS_KINDS)}")
