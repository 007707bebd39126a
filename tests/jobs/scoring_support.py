"""Helpers for the scoring tests: a champion without training, tiny images, row counts.

Scoring does not depend on what the weights are, so the champion is an untrained model of the
default architecture at 32 px, built once per test process, registered the way training
registers a version.
"""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import func, select, text

from mlc_core.db.engine import create_db_engine
from mlc_core.db.migrate import upgrade_schema
from mlc_core.db.model_versions import create_model_version, promote_model_version
from mlc_core.db.models import Image, ModelVersion, Score
from mlc_core.jobs.workspace import Workspace, open_workspace
from mlc_core.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["circle", "cross", "ring", "square", "triangle"]
IMAGE_SIZE = 32


@functools.cache
def tiny_model_file() -> tuple[bytes, str]:
    """The bytes and SHA-256 of an untrained default-architecture model (built once)."""
    import keras

    from mlc_core.model.artifacts import serialize_model, sha256_hex
    from mlc_core.model.build import build_model

    keras.utils.set_random_seed(7)
    data = serialize_model(build_model("compact_cnn", len(CLASSES), IMAGE_SIZE))
    return data, sha256_hex(data)


def register_champion(
    workspace: Workspace,
    version: str = "v1",
    thresholds: list[float] | None = None,
    metrics: dict[str, Any] | None = None,
) -> ModelVersion:
    """Put the tiny model in the store and make it the champion, as training would."""
    data, sha256 = tiny_model_file()
    key = f"models/{version}/model.keras"
    workspace.store.put(key, data)
    with workspace.transaction() as session:
        model_version = create_model_version(
            session,
            version=version,
            classes=CLASSES,
            thresholds=thresholds or [0.5] * len(CLASSES),
            metrics=metrics or {},
            backbone="compact_cnn",
            image_size=IMAGE_SIZE,
            artifact_uri=workspace.store.uri(key),
            artifact_sha256=sha256,
            card_uri=workspace.store.uri(f"models/{version}/card.json"),
        )
        promote_model_version(session, model_version, "registered by a test")
        session.flush()
        session.expunge(model_version)
    return model_version


def tiny_jpeg(index: int, side: int = 32) -> bytes:
    """A small JPEG whose colour depends on ``index`` (different bytes, different etags)."""
    color = (index * 37 % 256, index * 91 % 256, index * 53 % 256)
    buffer = io.BytesIO()
    PILImage.new("RGB", (side, side), color).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def put_tiny_images(workspace: Workspace, count: int, folder: str = "images/") -> list[str]:
    """Write ``count`` tiny JPEGs under ``folder`` and return their keys."""
    keys = [f"{folder}img-{index:05d}.jpg" for index in range(count)]
    for index, key in enumerate(keys):
        workspace.store.put(key, tiny_jpeg(index))
    return keys


def score_counts(workspace: Workspace, model_version_id: int) -> dict[str, int]:
    """Score rows per image URI under one model version (current and superseded versions)."""
    with workspace.transaction() as session:
        rows = session.execute(
            select(Image.uri, func.count(Score.id))
            .join(Score, Score.image_id == Image.id)
            .where(Score.model_version_id == model_version_id)
            .group_by(Image.uri)
        )
        return {uri: count for uri, count in rows}


def query(workspace: Workspace, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
    with workspace.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql), parameters)]


def server_settings(home: Path, database_url: str, storage_url: str, **overrides: Any) -> Any:
    return load_settings(home=home, database_url=database_url, storage_url=storage_url, **overrides)


def migrate(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        upgrade_schema(engine)
    finally:
        engine.dispose()


@contextmanager
def opened(settings: Any) -> Iterator[Workspace]:
    workspace = open_workspace(settings)
    try:
        yield workspace
    finally:
        workspace.close()


@contextmanager
def open_backend(request: Any, home: Path, backend: str, **overrides: Any) -> Iterator[Workspace]:
    """A workspace on the embedded defaults or on PostgreSQL + SeaweedFS, for a fixture."""
    if backend == "embedded":
        settings = load_settings(home=home, **overrides)
    else:
        database_url = request.getfixturevalue("postgres_url")
        storage_url = request.getfixturevalue("s3_store_url")
        migrate(database_url)
        settings = server_settings(home, database_url, storage_url, **overrides)
    with opened(settings) as workspace:
        yield workspace


# Scores with the settings from the MLC_ environment, after waiting for a "go" file if one is
# named, sleeping after each batch so a test can act mid-run; prints the report as JSON.
SCORING_PROCESS = """
import json, os, sys, threading, time
from pathlib import Path
from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.workspace import open_workspace
from mlc_core.settings import load_settings

go_file, pause = sys.argv[1], float(sys.argv[2])
workspace = open_workspace(load_settings())
print("ready", flush=True)
while go_file and not Path(go_file).exists():
    threading.Event().wait(0.01)
# An Event's wait, not time.sleep: under faketime (a skewed clock) sleeping can fail.
pausing = threading.Event()
report = score_images(workspace, on_progress=lambda progress: pausing.wait(pause))
print(json.dumps(report.as_dict()), flush=True)
"""


STARTED_PROCESSES: list[subprocess.Popen[str]] = []


def start_scoring_process(
    settings: Any, *, pause: float, go_file: Path | None = None, wrapper: Sequence[str] = ()
) -> subprocess.Popen[str]:
    """Start ``mlc_core.jobs.scoring.score_images`` in a new Python process on ``settings``.

    ``wrapper`` is a command the process runs under, e.g. ``faketime -f +2m``.
    """
    environment = {name: value for name, value in os.environ.items() if not name.startswith("MLC_")}
    environment.update(
        {
            "MLC_HOME": str(settings.home),
            "MLC_DATABASE_URL": settings.resolved_database_url,
            "MLC_STORAGE_URL": settings.resolved_storage_url,
            "MLC_SCORING__BATCH_SIZE": str(settings.scoring.batch_size),
            "MLC_SCORING__READ_WORKERS": str(settings.scoring.read_workers),
            "MLC_SCORING__CLAIM_LEASE_SECONDS": str(settings.scoring.claim_lease_seconds),
        }
    )
    process = subprocess.Popen(
        [*wrapper, sys.executable, "-c", SCORING_PROCESS, str(go_file or ""), str(pause)],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    STARTED_PROCESSES.append(process)
    return process


def stop_started_processes() -> None:
    """Kill scoring processes a test started and left running (a failed test must not leak them)."""
    while STARTED_PROCESSES:
        process = STARTED_PROCESSES.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def wait_until_ready(process: subprocess.Popen[str], timeout: float = 120.0) -> None:
    """Wait for the process's "ready" line; fail with its error output if it died first."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.strip() == "ready":
            return
        if not line and process.poll() is not None:
            raise AssertionError(f"scoring process exited early:\n{process.stderr.read()[-3000:]}")
    raise AssertionError("scoring process did not get ready in time")


def finished_report(process: subprocess.Popen[str], timeout: float = 180.0) -> dict[str, Any]:
    """The JSON report a scoring process prints last; fail with its errors if it failed."""
    stdout, stderr = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise AssertionError(f"scoring process failed ({process.returncode}):\n{stderr[-3000:]}")
    report: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return report
