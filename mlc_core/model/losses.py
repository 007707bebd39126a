"""Training losses for multilabel sigmoid outputs, with unknown labels masked out.

A label matrix may hold NaN where a class is unknown for an image: a correction such as
``+sea -trees`` states two classes of an image and says nothing of the others. Every loss here
ignores those entries: an image's loss is the mean over its known classes only (an image with
no known class adds 0), and a batch's loss is the mean over its images. Without NaN that is
exactly the usual mean over classes, so closed-world labels train as before.
"""

from __future__ import annotations

from typing import Any, Literal

import keras
import numpy as np

LossKind = Literal["bce", "weighted_bce", "focal", "asymmetric"]
LOSS_KINDS: tuple[str, ...] = ("bce", "weighted_bce", "focal", "asymmetric")
# Bounds on a positive's weight (1 - p) / p: a class seen in 1 of 1000 images would otherwise
# weigh ~1000 times a negative and its gradients would swamp every other class.
MIN_POSITIVE_WEIGHT = 0.05
MAX_POSITIVE_WEIGHT = 20.0
FOCAL_GAMMA = 2.0
# Asymmetric loss (Ridnik et al., ICCV 2021): easy negatives are down-weighted hard
# (gamma 4) and negatives scored below the margin 0.05 are dropped, positives keep plain BCE.
ASYMMETRIC_NEGATIVE_GAMMA = 4.0
ASYMMETRIC_MARGIN = 0.05


@keras.saving.register_keras_serializable(package="mlc")
class MaskedMultilabelLoss(keras.losses.Loss):
    """Binary cross-entropy (optionally class-weighted, focal or asymmetric) over known labels.

    ``y_true`` holds 1, 0 or NaN (unknown; also the blend of an unknown in mixup). Registered
    as serializable so a model compiled with it still saves and loads (in safe mode) with its
    compile configuration.

    Args:
        positive_weights: one weight per class for the positive terms (``None``: all 1).
        focal_gamma: ``(1 - p_t) ** gamma`` down-weights examples already right; 0 is BCE.
        negative_gamma: the focusing exponent of the negative terms alone (asymmetric loss).
        negative_margin: negatives scored below it cost nothing (asymmetric loss).
    """

    def __init__(
        self,
        positive_weights: list[float] | None = None,
        focal_gamma: float = 0.0,
        negative_gamma: float = 0.0,
        negative_margin: float = 0.0,
        name: str = "masked_multilabel_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.positive_weights = (
            None if positive_weights is None else [float(weight) for weight in positive_weights]
        )
        self.focal_gamma = float(focal_gamma)
        self.negative_gamma = float(negative_gamma)
        self.negative_margin = float(negative_margin)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ops = keras.ops
        y_true = ops.cast(y_true, y_pred.dtype)
        known = ops.logical_not(ops.isnan(y_true))
        target = ops.where(known, y_true, ops.zeros_like(y_true))
        epsilon = keras.config.epsilon()
        probability = ops.clip(y_pred, epsilon, 1.0 - epsilon)
        negative_probability = ops.maximum(probability - self.negative_margin, 0.0)
        positive_term = -target * ops.log(probability)
        negative_term = -(1.0 - target) * ops.log(ops.maximum(1.0 - negative_probability, epsilon))
        if self.positive_weights is not None:
            positive_term = positive_term * ops.convert_to_tensor(
                self.positive_weights, dtype=y_pred.dtype
            )
        if self.focal_gamma:
            positive_term = positive_term * (1.0 - probability) ** self.focal_gamma
            negative_term = negative_term * probability**self.focal_gamma
        if self.negative_gamma:
            negative_term = negative_term * negative_probability**self.negative_gamma
        weight = ops.cast(known, y_pred.dtype)
        per_class = (positive_term + negative_term) * weight
        return ops.sum(per_class, axis=-1) / ops.maximum(ops.sum(weight, axis=-1), 1.0)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "positive_weights": self.positive_weights,
            "focal_gamma": self.focal_gamma,
            "negative_gamma": self.negative_gamma,
            "negative_margin": self.negative_margin,
        }


def positive_weights(positive_rates: np.ndarray) -> np.ndarray:
    """Return ``(1 - p) / p`` per class, clipped to [MIN_POSITIVE_WEIGHT, MAX_POSITIVE_WEIGHT]."""
    rates = np.clip(np.asarray(positive_rates, dtype=np.float64), 1e-6, 1.0 - 1e-6)
    return np.clip((1.0 - rates) / rates, MIN_POSITIVE_WEIGHT, MAX_POSITIVE_WEIGHT)


def make_loss(kind: LossKind, positive_rates: np.ndarray | None = None) -> MaskedMultilabelLoss:
    """Return the training loss named ``kind``; every kind ignores unknown (NaN) labels.

    Args:
        kind: ``"bce"`` (plain binary cross-entropy), ``"weighted_bce"`` (positives of class
            ``c`` weighted by ``(1 - p_c) / p_c``, clipped to [0.05, 20], so rare classes are
            not drowned by their negatives), ``"focal"`` (binary focal cross-entropy, gamma 2,
            which down-weights examples the model already gets right) or ``"asymmetric"``
            (positives as in BCE; negatives focused with gamma 4 and those scored below 0.05
            ignored, so the many easy negatives of a rare class stop outvoting its positives).
        positive_rates: the fraction of training images (among those where the class is
            known) that have each class; required for ``"weighted_bce"``, ignored otherwise.

    Raises:
        ValueError: an unknown kind, or ``"weighted_bce"`` without valid positive rates.
    """
    if kind == "bce":
        return MaskedMultilabelLoss(name="binary_crossentropy")
    if kind == "focal":
        return MaskedMultilabelLoss(focal_gamma=FOCAL_GAMMA, name="binary_focal_crossentropy")
    if kind == "asymmetric":
        return MaskedMultilabelLoss(
            negative_gamma=ASYMMETRIC_NEGATIVE_GAMMA,
            negative_margin=ASYMMETRIC_MARGIN,
            name="asymmetric_loss",
        )
    if kind == "weighted_bce":
        if positive_rates is None:
            raise ValueError("the weighted_bce loss needs the positive rate of each class")
        rates = np.asarray(positive_rates, dtype=np.float64)
        if rates.ndim != 1 or rates.size == 0 or np.any(~((rates >= 0) & (rates <= 1))):
            raise ValueError(
                f"positive rates must be a non-empty vector of fractions in [0, 1], got {rates}"
            )
        return MaskedMultilabelLoss(
            positive_weights(rates).tolist(), name="weighted_binary_crossentropy"
        )
    raise ValueError(f"unknown loss {kind!r}; expected one of {', '.join(LOSS_KINDS)}")
