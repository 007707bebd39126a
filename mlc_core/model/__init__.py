"""Backbones, model building, training, prediction, evaluation and model files.

The Keras parts (``backbones``, ``build``, ``losses``, ``dataset``, ``training``, ``predict``,
``artifacts``) are re-exported here lazily: importing ``mlc_core.model`` or its NumPy-only
modules does not import TensorFlow, which takes seconds; the first use of a Keras name does.
This package never imports ``mlc_core.storage`` or ``mlc_core.db``; it receives callables
such as ``read_bytes`` instead.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlc_core.model.artifacts import (
        ModelCard,
        deserialize_model,
        library_versions,
        serialize_model,
        sha256_hex,
    )
    from mlc_core.model.backbones import BackboneSpec, backbone_names, get_backbone
    from mlc_core.model.build import build_model, model_image_size, model_num_labels
    from mlc_core.model.dataset import (
        DecodedImages,
        decode_labeled_images,
        make_eval_dataset,
        make_training_dataset,
    )
    from mlc_core.model.losses import make_loss
    from mlc_core.model.predict import Predictor
    from mlc_core.model.training import EpochReport, TrainingOutcome, train_model

_LAZY_EXPORTS: dict[str, str] = {
    "ModelCard": "artifacts",
    "deserialize_model": "artifacts",
    "library_versions": "artifacts",
    "serialize_model": "artifacts",
    "sha256_hex": "artifacts",
    "BackboneSpec": "backbones",
    "backbone_names": "backbones",
    "get_backbone": "backbones",
    "build_model": "build",
    "model_image_size": "build",
    "model_num_labels": "build",
    "DecodedImages": "dataset",
    "decode_labeled_images": "dataset",
    "make_eval_dataset": "dataset",
    "make_training_dataset": "dataset",
    "make_loss": "losses",
    "Predictor": "predict",
    "EpochReport": "training",
    "TrainingOutcome": "training",
    "train_model": "training",
}

__all__ = [
    "BackboneSpec",
    "DecodedImages",
    "EpochReport",
    "ModelCard",
    "Predictor",
    "TrainingOutcome",
    "backbone_names",
    "build_model",
    "decode_labeled_images",
    "deserialize_model",
    "get_backbone",
    "library_versions",
    "make_eval_dataset",
    "make_loss",
    "make_training_dataset",
    "model_image_size",
    "model_num_labels",
    "serialize_model",
    "sha256_hex",
    "train_model",
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value
    return value
