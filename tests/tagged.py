"""A workspace with known tags, on both backends, for the query and correction commands and
the web page.

Every threshold is 0.5. The champion v1 scored five images; the candidate v2 two. A person
removed beach from b, added dog to d and confirmed sky on c.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mlc_core.db.images import ImageRecord, register_images
from mlc_core.db.labels import LabelRecord, upsert_labels
from mlc_core.db.model_versions import create_model_version, promote_model_version
from mlc_core.db.models import ModelVersion
from mlc_core.db.scores import ImageScore, write_scores
from mlc_core.jobs.workspace import Workspace
from tests.jobs.scoring_support import open_backend, tiny_jpeg

CLASSES = ["beach", "dog", "sky"]
CHAMPION_SCORES = {
    "images/a.jpg": (0.9, 0.6, 0.1),
    "images/b.jpg": (0.7, 0.1, 0.8),
    "images/c.jpg": (0.1, 0.9, 0.55),
    "images/d.jpg": (0.2, 0.2, 0.45),
    "images/sub/e.jpg": (0.95, 0.95, 0.95),
}
CANDIDATE_SCORES = {"images/a.jpg": (0.1, 0.1, 0.9), "images/b.jpg": (0.6, 0.2, 0.3)}
LABELS = [
    ("images/b.jpg", "beach", False),
    ("images/d.jpg", "dog", True),
    ("images/c.jpg", "sky", True),
]
MLC = Path(sys.executable).parent / "mlc"


def _scores(ids: dict[str, int], scores: dict[str, tuple[float, ...]]) -> list[ImageScore]:
    return [
        ImageScore(ids[key], p, tuple((c, v) for c, v in zip(CLASSES, p, strict=True) if v >= 0.5))
        for key, p in scores.items()
    ]


def _version(workspace: Workspace, session: Session, version: str) -> ModelVersion:
    return create_model_version(
        session,
        version=version,
        classes=CLASSES,
        thresholds=[0.5, 0.5, 0.5],
        metrics={},
        backbone="compact_cnn",
        image_size=32,
        artifact_uri=workspace.store.uri(f"models/{version}/model.keras"),
        artifact_sha256="0" * 64,
        card_uri=workspace.store.uri(f"models/{version}/card.json"),
    )


def fill(workspace: Workspace) -> None:
    """Put the known images, scores and labels into ``workspace``."""
    for index, key in enumerate(CHAMPION_SCORES):
        workspace.store.put(key, tiny_jpeg(index))
    with workspace.transaction() as session:
        champion = _version(workspace, session, "v1")
        promote_model_version(session, champion, "test")
        candidate = _version(workspace, session, "v2")
        records = [ImageRecord(workspace.store.uri(k), "e1", 100, None) for k in CHAMPION_SCORES]
        root = len(workspace.store.root_uri)
        ids = {uri[root:]: i for (uri, _), i in register_images(session, records).items()}
        write_scores(session, champion.id, None, _scores(ids, CHAMPION_SCORES))
        write_scores(session, candidate.id, None, _scores(ids, CANDIDATE_SCORES))
        upsert_labels(
            session,
            [
                LabelRecord(workspace.store.uri(k), t, p, "test", complete=False)
                for k, t, p in LABELS
            ],
        )


@contextmanager
def _tagged(
    request: pytest.FixtureRequest, home: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Workspace]:
    with open_backend(request, home, backend) as workspace:
        fill(workspace)
        monkeypatch.setenv("MLC_DATABASE_URL", workspace.settings.resolved_database_url)
        monkeypatch.setenv("MLC_STORAGE_URL", workspace.settings.resolved_storage_url)
        yield workspace


@pytest.fixture(params=["embedded", "servers"])
def tagged(
    request: pytest.FixtureRequest,
    isolated_mlc_environment: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Workspace]:
    """The known workspace, with the ``MLC_`` environment pointing the CLI at it."""
    with _tagged(request, isolated_mlc_environment, request.param, monkeypatch) as workspace:
        yield workspace


@pytest.fixture
def tagged_embedded(
    request: pytest.FixtureRequest,
    isolated_mlc_environment: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Workspace]:
    """The known workspace on the embedded defaults only, for what no backend changes."""
    with _tagged(request, isolated_mlc_environment, "embedded", monkeypatch) as workspace:
        yield workspace


def invoke(*args: str) -> str:
    """``mlc args`` in this process; fails with the output if the command did not succeed."""
    from flows.cli import app

    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def run_mlc(
    *args: str, cwd: Path | None = None, drop_rights: bool = False
) -> subprocess.CompletedProcess[str]:
    """``mlc args`` as a user runs it: its own process, this test's ``MLC_`` environment.

    ``drop_rights``: as root (CI), run without the power to override file permissions, as
    any other user would.
    """
    env = {**os.environ, "COLUMNS": "200", "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [str(MLC), *args]
    if drop_rights and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.fail("running as root, this test needs setpriv (util-linux) to drop rights")
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False, cwd=cwd
    )
