"""What the kept Prefect server's record says, without starting one (the server itself is
tested through the `mlc` command in tests/test_cli_kept_server.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from flows.kept_server import KeptServer, is_running, recorded_server, server_folder, stop


def test_a_missing_or_corrupt_record_names_no_server(tmp_path: Path) -> None:
    folder = server_folder(tmp_path)
    assert recorded_server(folder) is None
    folder.mkdir(parents=True)
    (folder / "server.json").write_text('{"pid": 12')
    assert recorded_server(folder) is None
    assert stop(tmp_path) is None


def test_a_recorded_pid_that_now_belongs_to_another_process_is_not_taken_for_the_server() -> None:
    # After a reboot the recorded pid may be any process's: this one's, say.
    assert not is_running(KeptServer(os.getpid(), 4200, time.time(), "3.0.0"))


def test_a_recorded_server_that_exited_is_not_running() -> None:
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    assert not is_running(KeptServer(exited.pid, 4200, time.time(), "3.0.0"))
