"""The Prefect server kept between commands on the embedded defaults, as a user meets it through
the `mlc` command: two job commands share one server, which records both runs; a server killed
with `kill -9` is replaced by the next command; `PREFECT_API_URL` wins over it; `mlc server
stop` stops it. (A killed `mlc score` on a kept server is in tests/test_cli_kill.py; every
other test runs with the server turned off, see tests/fixtures/prefect.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flows.kept_server import KeptServer, is_running, recorded_server, server_folder
from mlc_core.jobs.workspace import open_workspace
from mlc_core.settings import load_settings
from tests.fixtures.prefect import PrefectServer
from tests.jobs.scoring_support import put_tiny_images, register_champion

MLC = Path(sys.executable).parent / "mlc"


def _environment(home: Path, tmp_path: Path) -> dict[str, str]:
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MLC_", "PREFECT_")) or name.startswith("MLC_TEST_")
    }
    base.update(
        MLC_HOME=str(home),
        PREFECT_HOME=str(tmp_path / "prefect-client"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        TF_CPP_MIN_LOG_LEVEL="2",
        COLUMNS="200",
    )
    return base


def _mlc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [str(MLC), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


def _flow_runs(api_url: str, flow_name: str) -> int:
    """How many runs of ``flow_name`` the server at ``api_url`` recorded."""
    body = json.dumps({"flows": {"name": {"any_": [flow_name]}}}).encode()
    request = urllib.request.Request(
        f"{api_url}/flow_runs/count", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(json.load(response))


def _kept(home: Path) -> KeptServer:
    server = recorded_server(server_folder(home))
    assert server is not None, "no kept server was recorded"
    return server


@pytest.fixture
def scored_home(isolated_mlc_environment: Path) -> Path:
    """An MLC_HOME with a champion and a few images, all scored by the first command."""
    workspace = open_workspace(load_settings())
    try:
        register_champion(workspace)
        put_tiny_images(workspace, 3)
    finally:
        workspace.close()
    return isolated_mlc_environment


@pytest.mark.slow
def test_job_commands_share_one_kept_server_that_records_their_runs_until_mlc_server_stop(
    scored_home: Path, tmp_path: Path
) -> None:
    env = _environment(scored_home, tmp_path)

    first = _mlc(env, "score")
    server = _kept(scored_home)
    second = _mlc(env, "score")

    assert "scored 3," in first.stdout and "scored 0," in second.stdout
    assert "starting a Prefect server for mlc's runs" in first.stderr
    assert "starting a Prefect server" not in second.stderr
    assert _kept(scored_home) == server and is_running(server)
    assert _flow_runs(server.api_url, "mlc-score") == 2
    # Its database lives beside mlc's data, not in the user's Prefect home.
    assert (server_folder(scored_home) / "prefect.db").is_file()
    assert not (tmp_path / "prefect-client" / "prefect.db").exists()
    status = _mlc(env, "server", "status")
    assert f"{server.ui_url} (pid {server.pid}" in status.stdout and "answering" in status.stdout

    stopped = _mlc(env, "server", "stop")

    assert f"stopped the Prefect server kept for mlc at {server.ui_url}" in stopped.stdout
    assert not is_running(server)
    assert "no Prefect server is kept" in _mlc(env, "server", "status").stdout
    assert "no Prefect server is kept" in _mlc(env, "server", "stop").stdout


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_databases_made")
def test_a_killed_kept_server_is_replaced_by_the_next_command(
    scored_home: Path, tmp_path: Path
) -> None:
    env = _environment(scored_home, tmp_path)
    _mlc(env, "score")
    dead = _kept(scored_home)
    os.kill(dead.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while is_running(dead):
        assert time.monotonic() < deadline, "the killed server did not go away"
        time.sleep(0.1)

    again = _mlc(env, "score")

    replacement = _kept(scored_home)
    assert "scored 0," in again.stdout
    assert replacement.pid != dead.pid and is_running(replacement)
    # Same database, so the runs recorded before the kill are still there.
    assert _flow_runs(replacement.api_url, "mlc-score") == 2


@pytest.mark.slow
def test_with_prefect_api_url_set_runs_go_there_and_no_server_is_kept(
    scored_home: Path, tmp_path: Path, prefect_server: PrefectServer
) -> None:
    env = prefect_server.env(_environment(scored_home, tmp_path))
    before = _flow_runs(prefect_server.api_url, "mlc-score")

    scored = _mlc(env, "score")

    assert "scored 3," in scored.stdout
    assert "starting a Prefect server" not in scored.stderr
    assert not server_folder(scored_home).exists()
    assert _flow_runs(prefect_server.api_url, "mlc-score") == before + 1
