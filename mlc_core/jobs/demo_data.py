"""A small synthetic multilabel image set for the demo and the tests.

Each image is a textured background with one to three kinds of shape on it; the image's tags are
the kinds of shape it shows. Every kind keeps to its own family of hues (with jitter) and its own
outline, so a small CNN learns the set in a few epochs on a CPU while still having to look at
several objects per image. Everything is drawn from one seed: the same seed gives the same bytes.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")
# Hue families (degrees) per shape: close enough to vary, far enough apart to be learnable.
_HUES = {"circle": 0, "square": 120, "triangle": 220, "cross": 50, "ring": 290}


@dataclass(frozen=True)
class SyntheticImage:
    name: str
    tags: tuple[str, ...]
    jpeg: bytes


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    h = (hue % 360) / 60
    c = value * saturation
    x = c * (1 - abs(h % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    m = value - c
    return int((r + m) * 255), int((g + m) * 255), int((b + m) * 255)


def _background(rng: np.random.Generator, side: int) -> Image.Image:
    # A grey texture with a faint tint: a saturated background of a shape's own hue would
    # hide it (a blue triangle on blue), and its tag would then be a label no one could see.
    base = rng.uniform(70, 190) + rng.uniform(-15, 15, size=3)
    noise = rng.normal(0, 18, size=(side, side, 1))
    stripes = 12 * np.sin(np.arange(side) / rng.uniform(3, 9))[None, :, None]
    pixels = np.clip(base[None, None, :] * 0.6 + 50 + noise + stripes, 0, 255)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def _draw_shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, kind: str, side: int) -> None:
    radius = rng.uniform(0.09, 0.17) * side
    cx, cy = rng.uniform(radius, side - radius, size=2)
    color = _hsv_to_rgb(
        _HUES[kind] + rng.uniform(-20, 20), rng.uniform(0.7, 1), rng.uniform(0.75, 1)
    )
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if kind == "circle":
        draw.ellipse(box, fill=color)
    elif kind == "square":
        draw.rectangle(box, fill=color)
    elif kind == "triangle":
        points = [
            (cx + radius * math.cos(a), cy + radius * math.sin(a))
            for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        ]
        draw.polygon(points, fill=color)
    elif kind == "cross":
        arm = radius / 3
        draw.rectangle((cx - radius, cy - arm, cx + radius, cy + arm), fill=color)
        draw.rectangle((cx - arm, cy - radius, cx + arm, cy + radius), fill=color)
    elif kind == "ring":
        draw.ellipse(box, outline=color, width=max(2, int(radius / 3)))
    else:
        raise ValueError(f"unknown shape {kind!r}; known shapes: {', '.join(SHAPES)}")


def make_synthetic_images(count: int, *, seed: int = 7, side: int = 96) -> list[SyntheticImage]:
    """Draw ``count`` JPEG images with their tag sets.

    Args:
        count: how many images.
        seed: the same seed gives the same images, byte for byte.
        side: pixel side of the square images.

    Returns:
        Images named ``synthetic-00000.jpg`` onwards, each with one to three tags.
    """
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        kinds = tuple(sorted(rng.choice(SHAPES, size=rng.integers(1, 4), replace=False)))
        picture = _background(rng, side)
        draw = ImageDraw.Draw(picture)
        for kind in kinds:
            for _ in range(rng.integers(1, 3)):
                _draw_shape(draw, rng, str(kind), side)
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=88)
        images.append(
            SyntheticImage(
                f"synthetic-{index:05d}.jpg", tuple(str(k) for k in kinds), buffer.getvalue()
            )
        )
    return images
