"""`mlc demo`, the main job, run as a user runs it: the installed command, twice."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

MLC = Path(sys.executable).parent / "mlc"


def _run(args: list[str], home: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MLC_HOME": str(home),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "COLUMNS": "200",
    }
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [str(MLC), *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.slow
def test_demo_runs_end_to_end_twice_and_leaves_queryable_tags(
    isolated_mlc_environment: Path, tmp_path: Path
) -> None:
    home = isolated_mlc_environment
    first = _run(["demo", "--images", "120", "--epochs", "4", "--minutes", "2"], home, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "hold-out mAP" in first.stdout
    assert "Next, try" in first.stdout
    for hint in ("mlc tags", "mlc show images/demo/", "mlc review", "mlc ui"):
        assert hint in first.stdout
    assert "http://127.0.0.1:8765/" in first.stdout
    assert "sqlite3" not in first.stdout
    # Log lines and reports round their numbers (0.6705227209633857 was once printed).
    assert not re.search(r"\d\.\d{7,}", first.stdout + first.stderr)

    second = _run(["demo", "--images", "120", "--epochs", "4", "--minutes", "2"], home, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 new images" in second.stdout

    with sqlite3.connect(home / "mlc.db") as connection:
        tags = connection.execute(
            "select image_uri, tag, probability, model_version from current_tags"
        ).fetchall()
    assert tags, "the demo left no tags in current_tags"
    tag = tags[0][1]
    listed = _run(["tags", "--tag", tag, "--json"], home, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert tag in listed.stdout


def test_score_before_training_is_one_clear_sentence(
    isolated_mlc_environment: Path, tmp_path: Path
) -> None:
    result = _run(["score"], isolated_mlc_environment, tmp_path)
    assert result.returncode != 0
    assert "no champion model yet" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_an_unreachable_database_is_one_clear_sentence(
    isolated_mlc_environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLC_DATABASE_URL", "postgresql+psycopg://mlc:secret@127.0.0.1:1/mlc")
    result = _run(["score"], isolated_mlc_environment, tmp_path)
    assert result.returncode != 0
    assert "cannot connect to the database" in result.stderr
    assert "secret" not in result.stderr and "Traceback" not in result.stderr


def test_a_bad_setting_names_the_variable(
    isolated_mlc_environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLC_STORAGE_URL", "s3://")
    result = _run(["score"], isolated_mlc_environment, tmp_path)
    assert result.returncode != 0
    assert "MLC_STORAGE_URL='s3://'" in result.stderr


def test_a_prefix_escaping_the_store_is_refused_before_anything_runs(
    isolated_mlc_environment: Path, tmp_path: Path
) -> None:
    result = _run(["score", "--prefix", "../etc/"], isolated_mlc_environment, tmp_path)
    assert result.returncode != 0
    assert "'..' segment" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://mlc:hunter2@db:notaport/mlc",
        "postgresql+psycopg//mlc:hunter2@db/mlc",
        "mysql://mlc:hunter2@db/mlc",
    ],
)
def test_a_bad_database_url_never_shows_its_password(
    isolated_mlc_environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("MLC_DATABASE_URL", url)
    result = _run(["models"], isolated_mlc_environment, tmp_path)
    assert result.returncode != 0
    assert "MLC_DATABASE_URL" in result.stderr or "mysql" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
