"""Fixtures for job tests: a workspace on the embedded defaults, and a tiny trained champion."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlc_core.jobs.demo_data import make_synthetic_images
from mlc_core.jobs.workspace import Workspace, open_workspace
from mlc_core.settings import Settings, load_settings

TINY_TRAINING = {
    "image_size": 32,
    "epochs": 2,
    "batch_size": 16,
    "min_positives": 2,
    "early_stopping_patience": 2,
}


def tiny_settings(home: Path, **overrides: object) -> Settings:
    return load_settings(home=home, training=TINY_TRAINING, **overrides)


@pytest.fixture
def workspace(isolated_mlc_environment: Path) -> Iterator[Workspace]:
    opened = open_workspace(tiny_settings(isolated_mlc_environment))
    yield opened
    opened.close()


def put_synthetic_images(
    workspace: Workspace, count: int, folder: str = "images/"
) -> dict[str, tuple[str, ...]]:
    """Write synthetic images into the store; returns key -> true tags."""
    truth = {}
    for image in make_synthetic_images(count, seed=11):
        key = folder + image.name
        workspace.store.put(key, image.jpeg)
        truth[key] = image.tags
    return truth


def labels_csv(truth: dict[str, tuple[str, ...]]) -> bytes:
    lines = ["key,tags"] + [f"{key},{'|'.join(tags)}" for key, tags in sorted(truth.items())]
    return ("\n".join(lines) + "\n").encode()
