"""A model version's predictor, loaded once per process.

A process that scores many times (a Dask worker taking shard after shard, a worker serving
flows in-process, the tests) would otherwise read, verify and trace the same model for every
run. The cache holds one predictor, keyed by where the model lives, its checksum and the batch
size it was traced for, so a new champion replaces the old one instead of piling up beside it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from mlc_core.db.models import ModelVersion
from mlc_core.errors import MlcError
from mlc_core.storage import ObjectStore, key_for_uri

if TYPE_CHECKING:
    from mlc_core.model.predict import Predictor
    from mlc_core.settings import ScoringSettings

_CACHE: dict[tuple[str, str, int], Predictor] = {}
# Shards running side by side in one process (a Dask worker with several threads) load the
# model once between them.
_LOCK = threading.Lock()


def cached_predictor(store: ObjectStore, model_version: ModelVersion, batch_size: int) -> Predictor:
    """The predictor of ``model_version`` for batches of ``batch_size``, loaded at most once.

    Raises:
        MlcError: the model lives outside ``store``.
        ObjectNotFound: the model file is missing from the store.
        ModelError: the file does not match the recorded checksum, or does not load.
    """
    # Imported here: TensorFlow takes seconds to load, and a run with nothing to score never
    # needs it.
    from mlc_core.model.artifacts import deserialize_model
    from mlc_core.model.predict import Predictor

    key = (model_version.artifact_uri, model_version.artifact_sha256, batch_size)
    with _LOCK:
        predictor = _CACHE.get(key)
        if predictor is None:
            model_key = key_for_uri(store, model_version.artifact_uri)
            if model_key is None:
                raise MlcError(
                    f"model {model_version.version} lives at {model_version.artifact_uri}, "
                    f"outside the store {store.url}; point MLC_STORAGE_URL at the store it was "
                    "trained with"
                )
            model = deserialize_model(store.get(model_key), model_version.artifact_sha256)
            predictor = Predictor(model, batch_size=batch_size)
            _CACHE.clear()
            _CACHE[key] = predictor
    return predictor


def scoring_predictor(
    store: ObjectStore, model_version: ModelVersion, scoring: ScoringSettings, batch_size: int
) -> Predictor:
    """:func:`cached_predictor` as scoring runs it on batches of ``batch_size``: forward passes
    of ``scoring.inference_batch_size`` images (of the whole batch where that is smaller, so a
    small batch is not padded), on ``scoring.inference_threads`` TensorFlow threads where this
    process has not run TensorFlow yet."""
    from mlc_core.model.predict import use_inference_threads

    # Before the model is loaded: loading runs TensorFlow's first operations.
    use_inference_threads(scoring.inference_threads)
    passes = min(scoring.inference_batch_size, batch_size)
    return cached_predictor(store, model_version, passes)
