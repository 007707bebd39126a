"""Fixtures for the Keras tests: tiny images and tiny models, made by the tests themselves."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import pytest

from mlc_core.model.build import build_model

RED = (220, 30, 30)
BLUE = (30, 40, 220)
IMAGE_SIZE = 32

SquareImages = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


@pytest.fixture
def square_images() -> SquareImages:
    """Return ``make(count, seed)``: noisy 32x32 images, each with a red or a blue square.

    Labels are two columns, ``[red, blue]``; images alternate red, blue, red, ...
    """

    def make(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        images = rng.integers(80, 176, (count, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        labels = np.zeros((count, 2), dtype=np.float32)
        for index in range(count):
            side = int(rng.integers(12, 20))
            top, left = rng.integers(0, IMAGE_SIZE - side, size=2)
            is_red = index % 2 == 0
            images[index, top : top + side, left : left + side] = RED if is_red else BLUE
            labels[index, 0 if is_red else 1] = 1.0
        return images, labels

    return make


@pytest.fixture
def tiny_model() -> keras.Model:
    """A compact_cnn classifier for two labels at 32 px, with seeded initial weights."""
    keras.utils.set_random_seed(7)
    return build_model("compact_cnn", 2, IMAGE_SIZE)


@pytest.fixture
def uint8_batch() -> np.ndarray:
    """Five random 32x32 RGB images."""
    return np.random.default_rng(3).integers(0, 256, (5, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
