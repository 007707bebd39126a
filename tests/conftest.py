"""Shared fixtures. Server fixtures live in ``tests/fixtures`` and are loaded as plugins."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.prefect import NO_KEPT_SERVER

# Quiet TensorFlow and keep Prefect from phoning home in every process the tests start.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

pytest_plugins = ["tests.fixtures.s3", "tests.fixtures.postgres", "tests.fixtures.prefect"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASET_DIR = Path(
    os.environ.get(
        "MLC_TEST_DATASET_DIR", REPO_ROOT.parent / "shared" / "datasets" / "natural_scene"
    )
)


@pytest.fixture(autouse=True)
def isolated_mlc_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own MLC_HOME, none of the caller's MLC_ variables, and a working
    directory of its own (settings also come from a ``.env`` file there). A Prefect server
    kept for that MLC_HOME is stopped when the test ends."""
    from flows.kept_server import stop

    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("MLC_") and not name.startswith("MLC_TEST_"):
            monkeypatch.delenv(name)
    for name, value in NO_KEPT_SERVER.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "mlc-home"
    monkeypatch.setenv("MLC_HOME", str(home))
    try:
        yield home
    finally:
        stop(home)


@pytest.fixture
def natural_scene_dir() -> Path:
    """The shared natural_scene data set; tests that need it skip where it is absent."""
    if not (DATASET_DIR / "labels.csv").is_file():
        pytest.skip(f"natural_scene data set not found at {DATASET_DIR} (set MLC_TEST_DATASET_DIR)")
    return DATASET_DIR
