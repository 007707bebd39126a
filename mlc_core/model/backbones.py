"""The backbone registry: feature extractors chosen by name.

A backbone takes float images in [0, 255] of shape ``(image_size, image_size, 3)`` and returns a
feature map; its own rescaling is inside it, so whoever feeds it never needs to know how it
normalizes pixels. :func:`mlc_core.model.build.build_model` puts the pooling and the
classification head on top.

``weights`` is one of:

* ``"none"``: random initialization (the default; needs nothing from outside);
* ``"imagenet"``: Keras' published ImageNet weights, downloaded on first use, so only for
  machines with a network (``compact_cnn`` has none);
* a path to a weights file saved from the same backbone (``.weights.h5`` written by
  ``save_weights``, or a Keras ``*_notop.h5`` download kept offline). It is loaded strictly:
  every variable must match, because silently skipping mismatched layers would train from
  random weights while the user believes they are pretrained.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from mlc_core.errors import ModelError, UnknownBackbone

WEIGHTS_NONE = "none"
WEIGHTS_IMAGENET = "imagenet"
DEFAULT_BACKBONE = "compact_cnn"


@dataclass(frozen=True)
class BackboneSpec:
    """A named backbone.

    Attributes:
        name: the registry name (``MLC_TRAINING__BACKBONE``).
        description: one line for people choosing a backbone.
        build: ``build(image_size, weights)`` returns a feature extractor that takes float
            images in [0, 255] and returns a 4-D feature map.
    """

    name: str
    description: str
    build: Callable[[int, str], keras.Model]


def require_tensorflow_backend() -> None:
    """Fail clearly when Keras runs on another backend; mlc uses tf.data and tf.function.

    Raises:
        ModelError: ``KERAS_BACKEND`` selects a backend other than TensorFlow.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ModelError(
            f"mlc needs Keras' TensorFlow backend but Keras is using {backend!r}; "
            "unset KERAS_BACKEND or set it to 'tensorflow'"
        )


def _weights_path(weights: str) -> Path | None:
    """Return the weights file named by ``weights``, or None for "none"/"imagenet"."""
    if weights in (WEIGHTS_NONE, WEIGHTS_IMAGENET):
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelError(
            f"weights file {weights} does not exist; use 'none', 'imagenet' or the path of a "
            "weights file saved from the same backbone"
        )
    return path


def _load_weights_file(model: keras.Model, path: Path, backbone: str) -> keras.Model:
    try:
        with warnings.catch_warnings():
            # Keras only warns when it skips parts of a model that the file does not cover,
            # leaving them randomly initialized; for us that is a file that does not fit.
            warnings.filterwarnings("error", category=UserWarning, module=r"keras\.")
            model.load_weights(str(path))
    except Exception as error:
        # Keras' messages can run to pages (they print tensors); the first line says it.
        summary = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelError(
            f"weights file {path} does not fit backbone {backbone!r} ({summary}); "
            f"use a file saved from a {backbone} backbone"
        ) from error
    return model


# BatchNorm's moving statistics track the data quickly enough for the few hundred steps a
# small data set gives, so validation scores are meaningful from the first epochs on.
_BATCH_NORM_MOMENTUM = 0.9


def _separable_block(
    x: keras.KerasTensor, filters: int, strides: int, name: str
) -> keras.KerasTensor:
    """Separable 3x3 convolution, BatchNorm, residual when shapes allow, ReLU.

    No normalization or activation between the depthwise and pointwise halves (as in
    Xception): on CPUs the elementwise passes over the activations, not the arithmetic, are
    what these small convolutions spend their time on.
    """
    y = keras.layers.SeparableConv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    y = keras.layers.BatchNormalization(momentum=_BATCH_NORM_MOMENTUM, name=f"{name}_bn")(y)
    if strides == 1 and x.shape[-1] == filters:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return keras.layers.ReLU(name=f"{name}_relu")(y)


# Output channels and stride of each residual separable block after the 4x4 stride-4 stem.
_COMPACT_STAGES = ((48, 1), (96, 2), (96, 1), (192, 2), (192, 1), (192, 1), (320, 2), (320, 1))
_COLOUR_FILTERS = 64


@keras.saving.register_keras_serializable(package="mlc")
class PatchMean(keras.layers.Layer):
    """Mean of each ``patch`` x ``patch`` block (like the stem's "valid" 4x4 stride-4 conv).

    A reshape and one reduction: on CPUs, ``AveragePooling2D`` over a full-size 3-channel
    image cost a fifth of compact_cnn's inference time; this costs a few percent.
    Registered as serializable so saved models load in safe mode.
    """

    def __init__(self, patch: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.patch = patch

    def call(self, images: Any) -> Any:
        patch = self.patch
        rows, columns, channels = (int(side) for side in images.shape[1:])
        rows, columns = rows // patch, columns // patch
        kept = images[:, : rows * patch, : columns * patch]
        blocks = keras.ops.reshape(kept, (-1, rows, patch, columns, patch, channels))
        return keras.ops.mean(blocks, axis=(2, 4))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        batch, rows, columns, channels = input_shape
        return (batch, int(rows or 0) // self.patch, int(columns or 0) // self.patch, channels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "patch": self.patch}


def _colour_statistics(
    images: keras.KerasTensor, downsamplings: int, filters: int
) -> keras.KerasTensor:
    """Per-cell colour moments on the grid of the final feature map, mixed by a 1x1 layer.

    A cell's moments are the mean colour of its 4x4-pixel patches and the mean of their
    squares, so the spread of colour within the cell is there too. The pooling repeats the
    stem's 4x4 stride-4 step and each stride-2 stage's "same" padding, so the grid matches
    the convolutional branch at any image size. A 1x1 layer on
    a cell's colour moments, averaged over the image by the head, is a learned soft colour
    histogram: the orange of a sunset or the ochre of sand reaches the head directly, not
    only through a dozen layers that also have to learn texture from 1,300 images.
    """
    mean = PatchMean(4, name="colour_mean_pool0")(images)
    square = keras.layers.Multiply(name="colour_squares")([mean, mean])
    for index in range(1, downsamplings + 1):
        mean = keras.layers.AveragePooling2D(
            2, strides=2, padding="same", name=f"colour_mean_pool{index}"
        )(mean)
        square = keras.layers.AveragePooling2D(
            2, strides=2, padding="same", name=f"colour_square_pool{index}"
        )(square)
    moments = keras.layers.Concatenate(name="colour_moments")([mean, square])
    y = keras.layers.Conv2D(filters, 1, use_bias=False, name="colour_conv")(moments)
    y = keras.layers.BatchNormalization(momentum=_BATCH_NORM_MOMENTUM, name="colour_bn")(y)
    return keras.layers.ReLU(name="colour_relu")(y)


def compact_cnn(image_size: int) -> keras.Model:
    """Return mlc's own CPU-first feature extractor (about 0.5 M parameters).

    Layout at 128 px: a 4x4 stride-4 "patchify" stem to 32x32x48, then residual separable
    blocks of 48, 96, 192 and 320 channels at 1/4, 1/8, 1/16 and 1/32 resolution; beside
    them, a colour branch of 64 channels computed from each 32x32 cell's colour moments;
    both feed a 1x1 expansion to 512 channels for the pooled features.

    Why this shape: a 3x3 stride-2 stem over 3 channels is the slowest layer of a small CNN
    on CPUs (tiny matrix products over the largest activations); a 4x4 patch holds 48 values
    and the stem has 48 filters, so it can keep all the colour and fine texture of each patch
    while going straight to 1/4 resolution. The stacked 3x3 separable convolutions then see
    texture at growing scales (sand, foliage, waves, rock), the colour branch hands the
    expansion the colour layout that tells many scene types apart, and the wide final
    expansion gives the head enough features to separate scene types that share colours.
    """
    inputs = keras.Input(shape=(image_size, image_size, 3), name="images")
    rescaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(48, 4, strides=4, use_bias=False, name="stem_conv")(rescaled)
    x = keras.layers.BatchNormalization(momentum=_BATCH_NORM_MOMENTUM, name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for index, (filters, strides) in enumerate(_COMPACT_STAGES, start=1):
        x = _separable_block(x, filters, strides, f"block{index}")
    downsamplings = sum(1 for _, strides in _COMPACT_STAGES if strides == 2)
    colour = _colour_statistics(rescaled, downsamplings, _COLOUR_FILTERS)
    x = keras.layers.Concatenate(name="with_colour")([x, colour])
    x = keras.layers.Conv2D(512, 1, use_bias=False, name="expand_conv")(x)
    x = keras.layers.BatchNormalization(momentum=_BATCH_NORM_MOMENTUM, name="expand_bn")(x)
    x = keras.layers.ReLU(name="expand_relu")(x)
    return keras.Model(inputs, x, name="compact_cnn")


def _build_compact_cnn(image_size: int, weights: str = WEIGHTS_NONE) -> keras.Model:
    if weights == WEIGHTS_IMAGENET:
        raise ModelError(
            "backbone 'compact_cnn' has no pretrained ImageNet weights; use weights 'none' or "
            "choose mobilenet_v3_small or efficientnet_v2_b0 for ImageNet weights"
        )
    path = _weights_path(weights)
    model = compact_cnn(image_size)
    return model if path is None else _load_weights_file(model, path, "compact_cnn")


def _build_mobilenet_v3_small(image_size: int, weights: str = WEIGHTS_NONE) -> keras.Model:
    path = _weights_path(weights)
    model = keras.applications.MobileNetV3Small(
        input_shape=(image_size, image_size, 3),
        include_top=False,
        weights=WEIGHTS_IMAGENET if weights == WEIGHTS_IMAGENET else None,
        include_preprocessing=True,
    )
    return model if path is None else _load_weights_file(model, path, "mobilenet_v3_small")


def _build_efficientnet_v2_b0(image_size: int, weights: str = WEIGHTS_NONE) -> keras.Model:
    path = _weights_path(weights)
    model = keras.applications.EfficientNetV2B0(
        input_shape=(image_size, image_size, 3),
        include_top=False,
        weights=WEIGHTS_IMAGENET if weights == WEIGHTS_IMAGENET else None,
        include_preprocessing=True,
    )
    return model if path is None else _load_weights_file(model, path, "efficientnet_v2_b0")


_REGISTRY: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="compact_cnn",
            description=(
                "default; mlc's own small CNN for CPUs (patchify stem, residual separable "
                "blocks, a colour-statistics branch, ~0.5 M parameters); random "
                "initialization only"
            ),
            build=_build_compact_cnn,
        ),
        BackboneSpec(
            name="mobilenet_v3_small",
            description="keras.applications.MobileNetV3Small; ImageNet weights available",
            build=_build_mobilenet_v3_small,
        ),
        BackboneSpec(
            name="efficientnet_v2_b0",
            description=("keras.applications.EfficientNetV2B0; slower, ImageNet weights available"),
            build=_build_efficientnet_v2_b0,
        ),
    )
}


def backbone_names() -> list[str]:
    """Return the registered backbone names, the default first."""
    return [DEFAULT_BACKBONE, *sorted(name for name in _REGISTRY if name != DEFAULT_BACKBONE)]


def get_backbone(name: str) -> BackboneSpec:
    """Return the backbone registered under ``name``.

    Raises:
        UnknownBackbone: ``name`` is not registered; the message lists the known names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownBackbone(name, backbone_names()) from None
