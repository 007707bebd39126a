from __future__ import annotations

import io
import json
import zipfile

import keras
import numpy as np
import pytest

from mlc_core.errors import ModelError, ModelIntegrityError
from mlc_core.model.artifacts import (
    ModelCard,
    deserialize_model,
    library_versions,
    serialize_model,
    sha256_hex,
)
from mlc_core.model.losses import make_loss


def _card(**changes: object) -> ModelCard:
    values: dict[str, object] = {
        "version": "v1",
        "classes": ["desert", "sea"],
        "thresholds": [0.4, 0.6],
        "image_size": 32,
        "backbone": "compact_cnn",
        "weights": "none",
        "metrics": {"map": np.float32(0.75), "ap": np.array([0.5, 1.0])},
        "data_snapshot": {"count": 10, "sha256": "ab" * 32},
        "training_seconds": 12.5,
        "library_versions": library_versions(),
        "created_at": "2026-01-02T03:04:05+00:00",
        "artifact_sha256": "cd" * 32,
        "extra": {"epochs_run": 3},
    }
    values.update(changes)
    return ModelCard(**values)  # type: ignore[arg-type]


def test_saved_and_loaded_model_gives_identical_outputs_on_the_same_images(
    tiny_model: keras.Model, uint8_batch: np.ndarray
) -> None:
    data = serialize_model(tiny_model)

    loaded = deserialize_model(data, sha256_hex(data))

    np.testing.assert_array_equal(
        np.asarray(loaded(uint8_batch, training=False)),
        np.asarray(tiny_model(uint8_batch, training=False)),
    )


def test_model_compiled_with_the_weighted_loss_still_loads_in_safe_mode(
    tiny_model: keras.Model,
) -> None:
    tiny_model.compile(optimizer="adam", loss=make_loss("weighted_bce", np.array([0.2, 0.5])))
    data = serialize_model(tiny_model)

    loaded = deserialize_model(data, sha256_hex(data))

    assert loaded.get_layer("probabilities").units == 2


def test_tampered_model_bytes_fail_the_checksum_before_loading(tiny_model: keras.Model) -> None:
    data = serialize_model(tiny_model)
    recorded = sha256_hex(data)
    tampered = data[:-10] + bytes(10)

    with pytest.raises(ModelIntegrityError) as caught:
        deserialize_model(tampered, recorded)

    assert str(caught.value) == (
        f"model file checksum is {sha256_hex(tampered)} but its card records {recorded}; "
        "the file was changed or corrupted"
    )


def test_file_that_is_not_a_keras_model_is_a_model_error() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    data = buffer.getvalue()

    with pytest.raises(ModelError, match="is not a Keras model") as caught:
        deserialize_model(data, sha256_hex(data))

    assert not isinstance(caught.value, ModelIntegrityError)


def test_model_card_round_trips_through_json() -> None:
    card = _card()

    restored = ModelCard.from_json(card.to_json())

    assert restored.metrics == {"map": pytest.approx(0.75), "ap": [0.5, 1.0]}
    assert restored.classes == card.classes
    assert restored.thresholds == card.thresholds
    assert restored.to_json() == ModelCard.from_json(restored.to_json()).to_json()


def test_model_card_missing_a_field_is_a_model_error_naming_it() -> None:
    document = json.loads(_card().to_json())
    del document["thresholds"]

    with pytest.raises(ModelError, match="missing the field 'thresholds'"):
        ModelCard.from_json(json.dumps(document).encode())


def test_garbled_model_card_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="not valid JSON"):
        ModelCard.from_json(b'{"version": "v1", "classes": [')


def test_model_card_field_of_the_wrong_type_is_a_model_error() -> None:
    document = json.loads(_card().to_json())
    document["image_size"] = "large"

    with pytest.raises(ModelError, match="'image_size' should be int"):
        ModelCard.from_json(json.dumps(document).encode())


def test_model_card_needs_one_threshold_per_class() -> None:
    with pytest.raises(ModelError, match="2 classes but 1 thresholds"):
        ModelCard.from_json(_card(thresholds=[0.5]).to_json())


def test_library_versions_name_every_library_that_shapes_a_model() -> None:
    assert set(library_versions()) == {"python", "tensorflow", "keras", "numpy", "mlc"}
