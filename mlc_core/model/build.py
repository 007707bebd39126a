"""Build the multilabel classifier: resizing + backbone + pooling + sigmoid head, one model.

Everything between "decoded pixels" and "probabilities" is inside the returned model (resizing
to the training size, the backbone's own rescaling), so training, evaluation and scoring feed
the same uint8-valued pixels and cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from mlc_core.model.backbones import get_backbone, require_tensorflow_backend

RESIZE_LAYER = "resize"
OUTPUT_LAYER = "probabilities"


@keras.saving.register_keras_serializable(package="mlc")
class ResizeIfNeeded(keras.layers.Resizing):
    """``Resizing`` that passes images already at the target size through untouched.

    Scoring feeds images decoded at the model's size, and an antialiased resize to the same
    size still costs a full pass over the pixels (about a fifth of compact_cnn's inference
    time); the sizes are static inside a traced function, so the check costs nothing.
    Registered as serializable so saved models load in safe mode.
    """

    def transform_images(
        self, images: Any, transformation: Any = None, training: bool = True
    ) -> Any:
        shape = images.shape
        if shape[self.height_axis] == self.height and shape[self.width_axis] == self.width:
            return images
        return super().transform_images(images, transformation, training)


def build_model(
    backbone: str,
    num_labels: int,
    image_size: int,
    *,
    weights: str = "none",
    dropout_rate: float = 0.3,
) -> keras.Model:
    """Return an uncompiled model mapping RGB images to one probability per label.

    The model accepts batches of any height and width with 3 channels, uint8 or float32 with
    values in [0, 255]; it resizes them to ``image_size`` itself. The output layer is named
    ``"probabilities"`` and has ``num_labels`` sigmoid units; the model is named
    ``mlc_<backbone>_<num_labels>_labels`` so the class count shows in summaries too.

    For identical initial weights across runs, call ``keras.utils.set_random_seed`` first.

    Args:
        backbone: a registry name (see :func:`mlc_core.model.backbones.backbone_names`).
        num_labels: the number of classes, at least 1.
        image_size: the square side the backbone sees.
        weights: ``"none"``, ``"imagenet"`` or a weights file for the backbone.
        dropout_rate: dropout before the classification layer, in [0, 1).

    Raises:
        ValueError: ``num_labels``, ``image_size`` or ``dropout_rate`` is out of range.
        UnknownBackbone: the backbone name is not registered.
        ModelError: the weights cannot be used with this backbone.
    """
    require_tensorflow_backend()
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1, got {num_labels}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
    spec = get_backbone(backbone)
    features = spec.build(image_size, weights)

    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="images")
    # Antialiasing keeps large inputs from aliasing when the model has to downscale them.
    x = ResizeIfNeeded(image_size, image_size, antialias=True, name=RESIZE_LAYER)(inputs)
    x = features(x)
    x = _pool_upper_and_lower_halves(x)
    x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
    outputs = keras.layers.Dense(num_labels, activation="sigmoid", name=OUTPUT_LAYER)(x)
    return keras.Model(inputs, outputs, name=f"mlc_{spec.name}_{num_labels}_labels")


def _pool_upper_and_lower_halves(features: keras.KerasTensor) -> keras.KerasTensor:
    """Average the feature map's upper and lower halves separately and join the two vectors.

    Scenes have an up and a down that a global average throws away: blue above is sky,
    blue below is sea; ochre below is sand. Two rows keep that (with an even number of rows
    their mean is the global average, so nothing is lost), while left and right stay pooled
    together, matching the mirror images the model trains on. With an odd number of rows the
    middle row is left out so the halves do not overlap; a one-row map gives one vector.
    """
    rows, columns = int(features.shape[1]), int(features.shape[2])
    half = max(rows // 2, 1)
    x = keras.layers.AveragePooling2D(
        pool_size=(half, columns), strides=(max(rows - half, 1), 1), name="pool_halves"
    )(features)
    return keras.layers.Flatten(name="pool")(x)


def model_image_size(model: keras.Model) -> int:
    """Return the square side a model built by :func:`build_model` was trained at.

    Falls back to the model's static input shape for models built some other way.

    Raises:
        ValueError: the model has neither a resize layer nor a static square input.
    """
    try:
        return int(model.get_layer(RESIZE_LAYER).height)
    except ValueError:
        pass
    shape = model.input_shape
    if len(shape) == 4 and shape[1] is not None and shape[1] == shape[2]:
        return int(shape[1])
    raise ValueError(f"model {model.name!r} has no resize layer and no square input shape")


def model_num_labels(model: keras.Model) -> int:
    """Return the number of probabilities the model outputs per image."""
    return int(model.output_shape[-1])


def weights_fit_both_sizes(backbone: str, num_labels: int, sizes: Sequence[int]) -> bool:
    """Whether models of ``backbone`` built at these sides hold weights of the same shapes (a
    feature map of one row pools to half the features of two rows)."""
    if len(set(sizes)) <= 1:
        return True
    shapes = [[w.shape for w in build_model(backbone, num_labels, size).weights] for size in sizes]
    return all(shape == shapes[0] for shape in shapes)


def at_size(model: keras.Model, backbone: str, size: int, dropout_rate: float) -> keras.Model:
    """The same weights in a model built for side ``size`` (the model resizes its input to
    the side it was built for, and no layer's weights depend on it)."""
    resized = build_model(
        backbone,
        model_num_labels(model),
        size,
        # The weights are the given ones: nothing is loaded (or downloaded) for them.
        weights="none",
        dropout_rate=dropout_rate,
    )
    resized.set_weights(model.get_weights())
    return resized
