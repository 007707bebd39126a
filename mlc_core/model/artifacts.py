"""Model files and their cards: save to bytes, load only what checks out.

A trained model travels as two objects: the ``.keras`` file (a zip Keras writes) and a JSON
model card that records, among everything a person wants to know about the model, the
SHA-256 of that file. Loading verifies the checksum before Keras reads a byte, and Keras
loads in safe mode, so a tampered or foreign file can neither be used by mistake nor run
code.
"""

from __future__ import annotations

import hashlib
import json
import platform
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import keras
import numpy as np

import mlc_core
from mlc_core.errors import ModelError, ModelIntegrityError

# build and losses are imported for their side effect: they register mlc's custom Keras
# objects, which safe-mode loading looks up by name.
from mlc_core.model import build, losses  # noqa: F401
from mlc_core.model.backbones import require_tensorflow_backend

MODEL_FILE_NAME = "model.keras"


@dataclass
class ModelCard:
    """Everything recorded about one trained model version.

    Attributes:
        version: the model version's identifier.
        classes: class names in output order.
        thresholds: one decision threshold per class, in the same order.
        image_size: the square side images are decoded at for this model.
        backbone: the backbone registry name.
        weights: the backbone's initial weights ("none", "imagenet" or a file path).
        metrics: evaluation results (e.g. test mAP, per-class AP).
        data_snapshot: what it was trained on, at least ``count`` and ``sha256``.
        training_seconds: wall time of training.
        library_versions: see :func:`library_versions`.
        created_at: ISO 8601 timestamp.
        artifact_sha256: SHA-256 of the ``.keras`` file, hex.
        extra: anything else (settings used, epochs run, ...).
    """

    version: str
    classes: list[str]
    thresholds: list[float]
    image_size: int
    backbone: str
    weights: str
    metrics: dict[str, Any]
    data_snapshot: dict[str, Any]
    training_seconds: float
    library_versions: dict[str, str]
    created_at: str
    artifact_sha256: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """Return the card as UTF-8 JSON, keys sorted so equal cards give equal bytes."""
        return json.dumps(asdict(self), sort_keys=True, indent=2, default=_json_default).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ModelCard:
        """Parse a card written by :meth:`to_json`; unknown fields are ignored.

        Raises:
            ModelError: the bytes are not JSON, or a field is missing or has the wrong type.
        """
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelError(f"the model card is not valid JSON ({error})") from None
        if not isinstance(document, dict):
            raise ModelError(
                f"the model card should be a JSON object, got {type(document).__name__}"
            )
        values: dict[str, Any] = {}
        for card_field in fields(cls):
            if card_field.name not in document:
                if card_field.name == "extra":
                    continue
                raise ModelError(f"the model card is missing the field {card_field.name!r}")
            values[card_field.name] = _checked(card_field.name, document[card_field.name])
        if len(values["thresholds"]) != len(values["classes"]):
            raise ModelError(
                f"the model card lists {len(values['classes'])} classes but "
                f"{len(values['thresholds'])} thresholds; it needs one threshold per class"
            )
        return cls(**values)


def _json_default(value: Any) -> Any:
    # Metrics are often NumPy scalars or arrays; JSON has no such types.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} into a model card")


_FIELD_KINDS: dict[str, str] = {
    "version": "str",
    "classes": "list[str]",
    "thresholds": "list[float]",
    "image_size": "int",
    "backbone": "str",
    "weights": "str",
    "metrics": "dict",
    "data_snapshot": "dict",
    "training_seconds": "float",
    "library_versions": "dict",
    "created_at": "str",
    "artifact_sha256": "str",
    "extra": "dict",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _checked(name: str, value: Any) -> Any:
    kind = _FIELD_KINDS[name]
    valid = {
        "str": lambda: isinstance(value, str),
        "int": lambda: isinstance(value, int) and not isinstance(value, bool),
        "float": lambda: _is_number(value),
        "dict": lambda: isinstance(value, dict),
        "list[str]": lambda: isinstance(value, list) and all(isinstance(v, str) for v in value),
        "list[float]": lambda: isinstance(value, list) and all(_is_number(v) for v in value),
    }[kind]()
    if not valid:
        raise ModelError(
            f"the model card field {name!r} should be {kind} but is {json.dumps(value)[:80]}"
        )
    if kind == "float":
        return float(value)
    if kind == "list[float]":
        return [float(v) for v in value]
    return value


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 of ``data`` as 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def serialize_model(model: keras.Model) -> bytes:
    """Return the model as the bytes of a ``.keras`` file (architecture, weights, config)."""
    with tempfile.TemporaryDirectory(prefix="mlc-model-") as folder:
        path = Path(folder) / MODEL_FILE_NAME
        model.save(path)
        return path.read_bytes()


def deserialize_model(data: bytes, expected_sha256: str) -> keras.Model:
    """Load a model from ``.keras`` bytes, after checking them against the card's checksum.

    The checksum is verified before Keras parses anything; Keras then loads in safe mode
    (no arbitrary code such as Lambda layers) and without the training configuration.

    Raises:
        ModelIntegrityError: the bytes do not have the expected SHA-256.
        ModelError: the bytes are not a Keras model file that loads in safe mode.
    """
    require_tensorflow_backend()
    actual = sha256_hex(data)
    if actual != expected_sha256.strip().lower():
        raise ModelIntegrityError(
            f"model file checksum is {actual} but its card records {expected_sha256}; "
            "the file was changed or corrupted"
        )
    with tempfile.TemporaryDirectory(prefix="mlc-model-") as folder:
        path = Path(folder) / MODEL_FILE_NAME
        path.write_bytes(data)
        try:
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as error:
            raise ModelError(
                f"the model file ({len(data)} bytes) is not a Keras model that loads in safe "
                f"mode ({type(error).__name__}: {error}); retrain or restore the file"
            ) from error
    if not isinstance(model, keras.Model):
        raise ModelError(f"the model file holds a {type(model).__name__}, not a Keras model")
    return model


def library_versions() -> dict[str, str]:
    """Return the versions of Python, TensorFlow, Keras, NumPy and mlc in this process."""
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "mlc": mlc_core.__version__,
    }
