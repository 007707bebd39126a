"""Where mlc keeps its own files in the object store."""

from __future__ import annotations

from dataclasses import dataclass

MODELS_PREFIX = "models/"


@dataclass(frozen=True)
class ModelPaths:
    """The store keys of one model version's files."""

    model: str
    card: str
    split: str


def model_paths(version: str) -> ModelPaths:
    folder = f"{MODELS_PREFIX}{version}/"
    return ModelPaths(
        model=folder + "model.keras", card=folder + "card.json", split=folder + "split.json"
    )
