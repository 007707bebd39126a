"""A misspelt setting stops the command with its name, as a user meets it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tagged import run_mlc


def test_a_misspelt_setting_in_the_environment_stops_the_command_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLC_TRAINING__EPOCS", "5")

    result = run_mlc("models")

    assert result.returncode != 0
    assert "MLC_TRAINING__EPOCS='5': no such setting" in result.stderr + result.stdout
    assert not (tmp_path / "home").exists()


def test_a_misspelt_setting_in_the_env_file_stops_the_command_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLC_HOME", str(tmp_path / "home"))
    (tmp_path / ".env").write_text("MLC_SCORING__READ_WORKRES=4\n")

    result = run_mlc("models", cwd=tmp_path)

    assert result.returncode != 0
    assert "MLC_SCORING__READ_WORKRES='4': no such setting" in result.stderr + result.stdout
