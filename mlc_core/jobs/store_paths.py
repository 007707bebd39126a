"""Where mlc keeps its own files in the object store, and the way back from a URI to a key."""

from __future__ import annotations

from dataclasses import dataclass

from mlc_core.storage import ObjectStore

MODELS_PREFIX = "models/"


@dataclass(frozen=True)
class ModelPaths:
    """The store keys of one model version's files."""

    model: str
    card: str
    split: str


def model_paths(version: str) -> ModelPaths:
    folder = f"{MODELS_PREFIX}{version}/"
    return ModelPaths(model=folder + "model.keras", card=folder + "card.json", split=folder + "split.json")


def key_for_uri(store: ObjectStore, uri: str) -> str | None:
    """The key of ``uri`` in ``store``, or None when the URI points somewhere else."""
    # A store's URIs are its root followed by the key, so the root is what precedes a key.
    root = store.uri("k")[:-1]
    return uri[len(root) :] if uri.startswith(root) and len(uri) > len(root) else None
