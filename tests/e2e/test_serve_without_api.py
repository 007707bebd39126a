"""`mlc serve` refuses to start, with one sentence, when it has no Prefect API to talk to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.prefect import free_port


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PREFECT_", "MLC_")) or name.startswith("MLC_TEST_")
    }
    return subprocess.run(
        [str(Path(sys.executable).parent / "mlc"), "serve"],
        env={**base, "MLC_HOME": str(tmp_path / "mlc-home"), "PREFECT_HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.slow
def test_serve_with_the_prefect_api_unreachable_exits_with_one_clear_error(
    tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"

    completed = _serve(tmp_path, PREFECT_API_URL=url)

    assert completed.returncode == 1
    message = " ".join(completed.stderr.split())
    assert message.startswith(f"error: the Prefect API at {url} cannot be reached"), message
    assert "Traceback" not in completed.stderr


@pytest.mark.slow
def test_serve_without_a_prefect_api_url_says_to_start_a_server(tmp_path: Path) -> None:
    completed = _serve(tmp_path)

    assert completed.returncode == 1
    assert "PREFECT_API_URL is not set" in " ".join(completed.stderr.split())
