from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlc_core.errors import ModelError, UnknownBackbone
from mlc_core.model.backbones import backbone_names, get_backbone


def test_unknown_backbone_error_lists_the_known_names() -> None:
    with pytest.raises(UnknownBackbone) as caught:
        get_backbone("resnet9000")

    message = str(caught.value)
    assert "resnet9000" in message
    for name in ("compact_cnn", "mobilenet_v3_small", "efficientnet_v2_b0"):
        assert name in message


def test_registry_lists_the_default_backbone_first() -> None:
    names = backbone_names()

    assert names[0] == "compact_cnn"
    assert {"mobilenet_v3_small", "efficientnet_v2_b0"} <= set(names)


def test_missing_weights_file_is_a_model_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.weights.h5"

    with pytest.raises(ModelError, match=f"weights file {missing} does not exist"):
        get_backbone("mobilenet_v3_small").build(32, str(missing))


def test_compact_cnn_refuses_imagenet_weights() -> None:
    with pytest.raises(ModelError, match="no pretrained ImageNet weights"):
        get_backbone("compact_cnn").build(32, "imagenet")


def test_weights_file_is_loaded_into_the_backbone(tmp_path: Path) -> None:
    build = get_backbone("compact_cnn").build
    trained = build(32, "none")
    path = tmp_path / "compact.weights.h5"
    trained.save_weights(path)

    loaded = build(32, str(path))

    for expected, actual in zip(trained.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_weights_file_of_another_backbone_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "compact.weights.h5"
    get_backbone("compact_cnn").build(32, "none").save_weights(path)

    with pytest.raises(ModelError, match="does not fit backbone 'mobilenet_v3_small'"):
        get_backbone("mobilenet_v3_small").build(32, str(path))


@pytest.mark.parametrize("image_size", [40, 72, 100])
def test_compact_cnn_colour_branch_fits_image_sizes_that_are_not_multiples_of_32(
    image_size: int,
) -> None:
    backbone = get_backbone("compact_cnn").build(image_size, "none")
    images = np.zeros((1, image_size, image_size, 3), dtype=np.float32)

    features = np.asarray(backbone(images, training=False))

    assert features.shape[:3] == (1, *backbone.get_layer("block8_relu").output.shape[1:3])
    assert features.shape[-1] == 512
