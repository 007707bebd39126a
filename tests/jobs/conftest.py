"""Fixtures for job tests: a workspace on the embedded defaults, and a tiny trained champion."""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mlc_core.db.model_versions import require_model_version
from mlc_core.jobs.demo_data import make_synthetic_images
from mlc_core.jobs.labels_import import import_labels
from mlc_core.jobs.store_paths import ModelPaths, model_paths_of
from mlc_core.jobs.training.report import TrainingReport
from mlc_core.jobs.training.train import train_model_version
from mlc_core.jobs.workspace import Workspace, open_workspace
from mlc_core.settings import Settings, load_settings
from mlc_core.storage import key_for_uri
from tests.jobs.scoring_support import stop_started_processes

TINY_TRAINING = {
    "image_size": 32,
    "epochs": 2,
    "batch_size": 16,
    "min_positives": 2,
    "early_stopping_patience": 2,
}


@pytest.fixture(autouse=True)
def _no_leaked_scoring_processes() -> Iterator[None]:
    yield
    stop_started_processes()


def tiny_settings(home: Path, **overrides: object) -> Settings:
    return load_settings(home=home, training=TINY_TRAINING, **overrides)


@pytest.fixture
def workspace(isolated_mlc_environment: Path) -> Iterator[Workspace]:
    opened = open_workspace(tiny_settings(isolated_mlc_environment))
    yield opened
    opened.close()


def _backend_workspace(request: pytest.FixtureRequest, home: Path, backend: str) -> Any:
    """A workspace on ``backend`` with the scoring settings of the test module (``SCORING``)."""
    from tests.jobs.scoring_support import open_backend

    return open_backend(request, home, backend, scoring=getattr(request.module, "SCORING", {}))


@pytest.fixture(params=["embedded", "servers"])
def each_backend(
    request: pytest.FixtureRequest, isolated_mlc_environment: Path
) -> Iterator[Workspace]:
    """The embedded defaults, then PostgreSQL and SeaweedFS: for behaviour on both."""
    with _backend_workspace(request, isolated_mlc_environment, request.param) as opened:
        yield opened


@pytest.fixture
def server_workspace(
    request: pytest.FixtureRequest, isolated_mlc_environment: Path
) -> Iterator[Workspace]:
    """PostgreSQL and SeaweedFS, for behaviour that only servers show (row locks, outages)."""
    with _backend_workspace(request, isolated_mlc_environment, "servers") as opened:
        yield opened


@pytest.fixture
def embedded_workspace(
    request: pytest.FixtureRequest, isolated_mlc_environment: Path
) -> Iterator[Workspace]:
    """The embedded defaults only, for behaviour that does not depend on the backends."""
    with _backend_workspace(request, isolated_mlc_environment, "embedded") as opened:
        yield opened


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


FIRST_CHAMPION_IMAGES = 48


@dataclasses.dataclass(frozen=True)
class TrainedWorkspace:
    """A workspace with trained model versions, the true tags of its images, the last report."""

    workspace: Workspace
    truth: dict[str, tuple[str, ...]]
    report: TrainingReport


class WorkspaceFiles:
    """The files of a closed embedded workspace, put back at the same path for each test.

    The database holds absolute ``file://`` URIs, so a copy must sit where the original did.
    The store's files are hard links rather than copies: the local store's etag includes the
    inode number, so a copy would be a new version of every object. A test's writes never
    reach the saved files because the store replaces a file by renaming a new one over it;
    :meth:`restore` checks that none was changed in place all the same.
    """

    def __init__(self, home: Path, label: str) -> None:
        self.home = home
        self.saved = home.with_name(f"{home.name}-{label}")
        self._copy(home, self.saved)
        self.stamps = self._stamps()

    def restore(self) -> None:
        if self._stamps() != self.stamps:
            pytest.fail(f"a file of the saved workspace {self.saved} was changed in place")
        shutil.rmtree(self.home, ignore_errors=True)
        self._copy(self.saved, self.home)

    def _stamps(self) -> dict[Path, tuple[int, int]]:
        return {
            path: (path.stat().st_mtime_ns, path.stat().st_size)
            for path in self.saved.rglob("*")
            if path.is_file()
        }

    @staticmethod
    def _copy(source: Path, target: Path) -> None:
        store = source / "store"

        def link_or_copy(src: str, dst: str) -> None:
            # SQLite writes its file in place, so the database is a real copy.
            if Path(src).is_relative_to(store):
                os.link(src, dst)
            else:
                shutil.copy2(src, dst)

        shutil.copytree(source, target, copy_function=link_or_copy)


@dataclasses.dataclass(frozen=True)
class TrainedSnapshot:
    """A trained workspace saved once, for tests that each need a fresh copy of it."""

    files: WorkspaceFiles
    truth: dict[str, tuple[str, ...]]
    report: TrainingReport

    @contextmanager
    def restored(self) -> Iterator[TrainedWorkspace]:
        """Put the files back and open them; the truth and report are copies a test may change."""
        self.files.restore()
        opened = open_workspace(tiny_settings(self.files.home))
        try:
            yield TrainedWorkspace(opened, dict(self.truth), copy.deepcopy(self.report))
        finally:
            opened.close()


@pytest.fixture(scope="session")
def first_champion_snapshot(tmp_path_factory: pytest.TempPathFactory) -> TrainedSnapshot:
    """Train v1 once per session: tracing the training graph takes most of a training's time."""
    home = tmp_path_factory.mktemp("first-champion") / "mlc-home"
    with pytest.MonkeyPatch.context() as monkeypatch:
        # A session fixture is set up before the function-scoped environment is cleaned.
        for name in list(os.environ):
            if name.startswith("MLC_") and not name.startswith("MLC_TEST_"):
                monkeypatch.delenv(name)
        workspace = open_workspace(tiny_settings(home))
    try:
        truth = put_synthetic_images(workspace, FIRST_CHAMPION_IMAGES)
        with workspace.transaction() as session:
            import_labels(session, workspace.store, labels_csv(truth), source="test")
        report = train_model_version(workspace, workspace.settings.training)
    finally:
        workspace.close()
    return TrainedSnapshot(WorkspaceFiles(home, "v1"), truth, report)


@pytest.fixture
def trained(first_champion_snapshot: TrainedSnapshot) -> Iterator[TrainedWorkspace]:
    """A fresh copy of a workspace holding 48 labelled synthetic images and their champion v1.

    It is the state each test reached by putting, labelling and training on its own, only the
    training is done once per session.
    """
    with first_champion_snapshot.restored() as workspace:
        yield workspace


def model_files(workspace: Workspace, version: str) -> ModelPaths:
    """The store keys of a trained version's files (their folder is unique per training)."""
    with workspace.transaction() as session:
        card_uri = require_model_version(session, version).card_uri
    return model_paths_of(key_for_uri(workspace.store, card_uri) or "")
