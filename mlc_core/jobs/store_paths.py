"""Where mlc keeps its own files in the object store."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

MODELS_PREFIX = "models/"


@dataclass(frozen=True)
class ModelPaths:
    """The store keys of one model version's files."""

    model: str
    card: str
    split: str


def new_model_paths(version: str) -> ModelPaths:
    """Keys for a model version about to be written, in a folder no other training uses.

    The folder carries a random part: a training that lost a race for the version name can
    never overwrite the files of the one that won, which may be the champion by then.
    """
    return _paths(f"{MODELS_PREFIX}{version}-{secrets.token_hex(4)}/")


def model_paths_of(card_key: str) -> ModelPaths:
    """The keys of the version whose card is at ``card_key`` (its files share a folder)."""
    return _paths(card_key.rpartition("/")[0] + "/")


def _paths(folder: str) -> ModelPaths:
    return ModelPaths(
        model=folder + "model.keras", card=folder + "card.json", split=folder + "split.json"
    )
