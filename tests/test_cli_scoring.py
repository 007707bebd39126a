"""`mlc score` and `mlc promote` as a user runs them, on what one object or folder can do wrong:
a file and a folder the user running mlc may not read (CI runs as root, so the command runs as
root without the right to override file permissions), and a promotion's rescore."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.workspace import open_workspace
from mlc_core.settings import load_settings
from tests.fixtures.prefect import NO_KEPT_SERVER
from tests.jobs.scoring_support import put_tiny_images, register_champion, tiny_jpeg

MLC = Path(sys.executable).parent / "mlc"
# Not about a user's first command: Prefect's database is there already.
pytestmark = pytest.mark.usefixtures("prefect_databases_made")


def _command(*args: str) -> list[str]:
    """``mlc args``, for root without the power to read what its permissions forbid."""
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.fail("running as root, these tests need setpriv (util-linux) to drop rights")
        return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", str(MLC), *args]
    return [str(MLC), *args]


def _run(home: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLC_", "PREFECT_API"))},
        "MLC_HOME": str(home),
        "MLC_ORCHESTRATION__TRANSIENT_RETRIES": "0",
        **NO_KEPT_SERVER,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "COLUMNS": "200",
    }
    return subprocess.run(
        _command(*args), env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _rows(home: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(home / "mlc.db") as connection:
        return [tuple(row) for row in connection.execute(sql)]


@pytest.mark.slow
def test_an_unreadable_file_is_a_failure_and_an_unreadable_folder_keeps_its_images(
    isolated_mlc_environment: Path, tmp_path: Path
) -> None:
    home = isolated_mlc_environment
    workspace = open_workspace(load_settings())
    try:
        register_champion(workspace)
        put_tiny_images(workspace, 3, folder="images/open/")
        locked = put_tiny_images(workspace, 2, folder="images/locked/")
        score_images(workspace)
        workspace.store.put("images/open/secret.jpg", tiny_jpeg(42))
        root = workspace.store.root  # type: ignore[attr-defined]
    finally:
        workspace.close()
    (root / "images" / "open" / "secret.jpg").chmod(0)
    (root / "images" / "locked").chmod(0)
    try:
        result = _run(home, tmp_path, "score")
    finally:
        (root / "images" / "locked").chmod(0o755)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "could not read images/locked" in result.stdout + result.stderr
    assert "failed: 1 x permission denied" in result.stdout
    # The folder's images were not seen, but the listing was incomplete: none was retired.
    assert _rows(home, "select count(*) from images where retired_at is not null") == [(0,)]
    assert len(_rows(home, "select distinct image_uri from current_tags")) >= len(locked)
    [(error,)] = _rows(home, "select error from scoring_failures")
    assert error.startswith("permission denied")


@pytest.mark.slow
def test_promote_scores_what_the_new_champion_has_not_and_no_rescore_keeps_the_old_tags(
    isolated_mlc_environment: Path, tmp_path: Path
) -> None:
    home = isolated_mlc_environment
    workspace = open_workspace(load_settings())
    try:
        register_champion(workspace, "v1", thresholds=[0.0001] * 5)
        put_tiny_images(workspace, 4)
        score_images(workspace)
        register_champion(workspace, "v2", thresholds=[0.0001] * 5)
    finally:
        workspace.close()
    # v2 is champion and has scored nothing: the views show v1's tags meanwhile.
    assert _rows(home, "select distinct model_version from current_tags") == [("v1",)]

    kept = _run(home, tmp_path, "promote", "v1", "--no-rescore")
    assert kept.returncode == 0, kept.stderr
    assert "listed" not in kept.stdout  # no scoring run
    promoted = _run(home, tmp_path, "promote", "v2")

    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert "scored 4," in promoted.stdout
    assert _rows(home, "select distinct model_version from current_tags") == [("v2",)]


@pytest.mark.slow
def test_score_since_a_key_lists_only_later_keys_and_retires_nothing(
    isolated_mlc_environment: Path, tmp_path: Path
) -> None:
    home = isolated_mlc_environment
    workspace = open_workspace(load_settings())
    try:
        register_champion(workspace, "v1", thresholds=[0.0001] * 5)
        old = put_tiny_images(workspace, 3, "images/2026-01-01/")
        score_images(workspace)
        for key in old:
            workspace.store.delete(key)
        put_tiny_images(workspace, 2, "images/2026-02-01/")
    finally:
        workspace.close()

    result = _run(home, tmp_path, "score", "--since", "images/2026-02-01/")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "listed 2 objects, 2 new images; scored 2," in result.stdout
    assert _rows(home, "select count(*) from images where retired_at is not null") == [(0,)]


@pytest.mark.slow
def test_score_retires_the_images_deleted_since_and_a_second_run_changes_no_row(
    isolated_mlc_environment: Path, tmp_path: Path
) -> None:
    home = isolated_mlc_environment
    workspace = open_workspace(load_settings())
    try:
        register_champion(workspace, "v1", thresholds=[0.0001] * 5)
        keys = put_tiny_images(workspace, 12)
        score_images(workspace)
        deleted = [keys[0], keys[6], keys[11]]  # the first key, one between, the last
        for key in deleted:
            workspace.store.delete(key)
        gone = [(workspace.store.uri(key),) for key in deleted]
    finally:
        workspace.close()

    result = _run(home, tmp_path, "score")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "listed 9 objects, 0 new images; scored 0," in result.stdout
    assert "retired: 3 images gone from the store" in result.stdout
    assert _rows(home, "select uri from images where retired_at is not null order by uri") == gone
    assert len(_rows(home, "select distinct image_uri from current_tags")) == 9
    images = _rows(home, "select * from images order by id")
    again = _run(home, tmp_path, "score")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "retired" not in again.stdout
    assert _rows(home, "select * from images order by id") == images
