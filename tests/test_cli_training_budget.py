"""`mlc train` with a time budget shorter than one epoch: one clear sentence, nothing written."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mlc_core.jobs.labels_import import import_labels
from mlc_core.jobs.workspace import open_workspace
from mlc_core.settings import load_settings
from tests.fixtures.prefect import NO_KEPT_SERVER
from tests.jobs.conftest import labels_csv, put_synthetic_images

MLC = Path(sys.executable).parent / "mlc"
# Not about a user's first command: Prefect's database is there already.
pytestmark = pytest.mark.usefixtures("prefect_databases_made")


def test_a_budget_shorter_than_one_epoch_stops_train_before_anything_is_written(
    isolated_mlc_environment: Path, tmp_path: Path
) -> None:
    home = isolated_mlc_environment
    workspace = open_workspace(load_settings())
    try:
        truth = put_synthetic_images(workspace, 24)
        with workspace.transaction() as session:
            import_labels(session, workspace.store, labels_csv(truth), source="test")
    finally:
        workspace.close()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLC_", "PREFECT_"))},
        "MLC_HOME": str(home),
        "MLC_TRAINING__IMAGE_SIZE": "32",
        "MLC_TRAINING__MIN_POSITIVES": "2",
        "MLC_TRAINING__TIME_BUDGET_MINUTES": "0.0001",
        **NO_KEPT_SERVER,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "COLUMNS": "200",
    }

    result = subprocess.run(
        [str(MLC), "train", "--epochs", "3"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode != 0
    assert "MLC_TRAINING__TIME_BUDGET_MINUTES" in result.stderr, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    with sqlite3.connect(home / "mlc.db") as connection:
        assert connection.execute("select count(*) from model_versions").fetchone()[0] == 0
    assert not (home / "store" / "models").exists()
