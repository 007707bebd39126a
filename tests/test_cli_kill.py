"""Jobs that must not overlap, as a user runs them: `kill -9` of a running `mlc score` or
`mlc train`, then the same command again, on the embedded defaults (the Prefect server kept
between commands outlives the killed one; with it turned off, Prefect's temporary server dies
with the command) and against a real Prefect server. The next command must not wait for
the dead one for longer than the claim lease, and nothing it held may be lost or done twice.
Two trainings at once take turns and both leave a loadable model."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.kept_server import is_running, recorded_server, server_folder
from mlc_core.jobs.labels_import import import_labels
from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.workspace import open_workspace
from mlc_core.settings import load_settings
from tests.fixtures.prefect import NO_KEPT_SERVER, PrefectServer
from tests.jobs.conftest import labels_csv, put_synthetic_images
from tests.jobs.scoring_support import put_tiny_images, register_champion

MLC = Path(sys.executable).parent / "mlc"
# Not about a user's first command: Prefect's database is there already.
pytestmark = pytest.mark.usefixtures("prefect_databases_made")
LEASE_SECONDS = 3
IMAGES = 1500
TRAINING = {
    "MLC_TRAINING__IMAGE_SIZE": "32",
    "MLC_TRAINING__BATCH_SIZE": "16",
    "MLC_TRAINING__MIN_POSITIVES": "2",
}
# What a second command may take at most: its own startup and work (tens of seconds on a busy
# two-core machine) plus the lease; a slot left behind by the killed command made it wait
# forever.
SECOND_COMMAND_TIMEOUT = 240


def _environment(home: Path, prefect: PrefectServer | str, tmp_path: Path) -> dict[str, str]:
    """The command's environment on ``prefect``: a server of the session, or the embedded
    defaults' ``kept`` server (its own, kept between commands) or ``temporary`` one per
    command (Prefect's ephemeral mode)."""
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MLC_", "PREFECT_")) or name.startswith("MLC_TEST_")
    }
    base.update(
        {
            "MLC_HOME": str(home),
            "MLC_SCORING__BATCH_SIZE": "4",
            "MLC_SCORING__CLAIM_LEASE_SECONDS": str(LEASE_SECONDS),
            "MLC_ORCHESTRATION__TRANSIENT_RETRIES": "0",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "COLUMNS": "200",
            **TRAINING,
        }
    )
    if isinstance(prefect, PrefectServer):
        return prefect.env(base, PREFECT_HOME=str(tmp_path / "prefect-client"), **NO_KEPT_SERVER)
    base.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false"
    )
    if prefect == "temporary":
        base.update(NO_KEPT_SERVER)
    return base


@pytest.fixture
def environment(
    request: pytest.FixtureRequest, isolated_mlc_environment: Path, tmp_path: Path
) -> dict[str, str]:
    prefect = (
        request.getfixturevalue("prefect_server")
        if request.param == "prefect-server"
        else request.param
    )
    return _environment(isolated_mlc_environment, prefect, tmp_path)


def _count(home: Path, sql: str) -> int:
    try:
        with sqlite3.connect(home / "mlc.db", timeout=30) as connection:
            return int(connection.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # the schema is not there yet


def _kill_when(command: list[str], env: dict[str, str], home: Path, ready_sql: str) -> None:
    """Start ``mlc`` with ``command`` and SIGKILL it and its children once ``ready_sql`` is > 0."""
    process = subprocess.Popen(
        [str(MLC), *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while _count(home, ready_sql) == 0:
            assert process.poll() is None, f"mlc {command} ended early:\n{process.stderr.read()}"
            assert time.monotonic() < deadline, f"mlc {command} did not get going in time"
            time.sleep(0.05)
    finally:
        # The whole process group: the command and Prefect's temporary server, as a container
        # kill would take them (a kept server has a session of its own and stays).
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MLC), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=SECOND_COMMAND_TIMEOUT,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("environment", ["kept", "temporary", "prefect-server"], indirect=True)
def test_a_killed_score_command_does_not_block_the_next_one(
    isolated_mlc_environment: Path, environment: dict[str, str]
) -> None:
    home = isolated_mlc_environment
    workspace = open_workspace(load_settings())
    try:
        register_champion(workspace)
        put_tiny_images(workspace, IMAGES)
    finally:
        workspace.close()

    _kill_when(["score"], environment, home, "select count(*) > 7 from scores")
    killed = _count(home, "select count(*) from scores")
    assert 0 < killed < IMAGES

    second = _run(["score"], environment)

    assert second.returncode == 0, second.stdout + second.stderr
    assert f"scored {IMAGES - killed}," in second.stdout
    assert _count(home, "select count(distinct image_id) from scores") == IMAGES
    assert _count(home, "select count(*) from scores") == IMAGES
    assert _count(home, "select count(*) from run_locks") == 0
    assert _count(home, "select count(*) from score_claims") == 0
    kept = recorded_server(server_folder(home))
    if "PREFECT_API_URL" in environment or environment.keys() & NO_KEPT_SERVER.keys():
        assert kept is None
    else:
        # The server the killed command started outlived it and served the second command.
        assert kept is not None and is_running(kept)
        assert "starting a Prefect server" not in second.stderr


@pytest.mark.slow
@pytest.mark.parametrize("environment", ["kept", "prefect-server"], indirect=True)
def test_a_killed_training_does_not_block_the_next_one(
    isolated_mlc_environment: Path, environment: dict[str, str]
) -> None:
    home = isolated_mlc_environment
    workspace = open_workspace(load_settings())
    try:
        truth = put_synthetic_images(workspace, 36)
        with workspace.transaction() as session:
            import_labels(session, workspace.store, labels_csv(truth), source="test")
    finally:
        workspace.close()

    # Killed in its first epochs: the training lock is held and no version is written yet.
    _kill_when(
        ["train", "--epochs", "500"],
        environment,
        home,
        "select count(*) from run_locks where name = 'train' and run_id is not null",
    )
    assert _count(home, "select count(*) from model_versions") == 0

    second = _run(["train", "--epochs", "2"], environment)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "is champion" in second.stdout
    assert _count(home, "select count(*) from model_versions where status = 'champion'") == 1
    assert _count(home, "select count(*) from runs where kind = 'train' and status = 'failed'") == 1
    assert _count(home, "select count(*) from run_locks") == 0


@pytest.mark.slow
def test_two_trainings_started_at_once_leave_a_loadable_champion(
    isolated_mlc_environment: Path, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    home = isolated_mlc_environment
    env = _environment(home, prefect_server, tmp_path)
    workspace = open_workspace(load_settings())
    try:
        truth = put_synthetic_images(workspace, 36)
        with workspace.transaction() as session:
            import_labels(session, workspace.store, labels_csv(truth), source="test")
    finally:
        workspace.close()

    def train() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(MLC), "train", "--epochs", "30"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first = train()
    deadline = time.monotonic() + 120
    while _count(home, "select count(*) from run_locks where name = 'train'") == 0:
        assert first.poll() is None and time.monotonic() < deadline, "the first never trained"
        time.sleep(0.05)
    second = train()
    outputs = [process.communicate(timeout=SECOND_COMMAND_TIMEOUT) for process in (first, second)]

    assert [first.returncode, second.returncode] == [0, 0], outputs
    # The second waited for the first's training lock; each wrote a version of its own.
    assert "waiting: train is held by a training" in " ".join(outputs[1][1].split())
    assert _count(home, "select count(distinct artifact_uri) from model_versions") == 2
    workspace = open_workspace(load_settings())
    try:
        report = score_images(workspace)  # loads the champion, checking its file's checksum
    finally:
        workspace.close()
    assert report.scored == 36
