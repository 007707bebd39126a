"""A local Prefect server kept running between mlc's commands on the embedded defaults.

Without ``PREFECT_API_URL``, Prefect's ephemeral mode starts a temporary server inside every
command that runs a flow and stops it when the command ends: 10-20 s of a two-core machine per
command, most of a no-op ``mlc score``. Instead, the first command that runs a flow starts
``prefect server start`` in the background on a free loopback port, with its database under
``$MLC_HOME/prefect``, and records it in ``$MLC_HOME/prefect/server.json``; later commands
reuse it while it answers. Runs are recorded as before, and the Prefect UI shows them at the
server's address (``mlc server status``).

- One server per ``MLC_HOME``: a file lock makes commands started together agree on one.
- A server whose process is gone, or that stopped answering long after it started, is replaced
  by the next command; one of another Prefect version than the command's is stopped and
  replaced.
- The server runs in a session of its own, so a killed command (or process group) leaves it
  running for the next; ``mlc server stop`` stops it.
- ``PREFECT_API_URL`` (from the environment or a Prefect profile) always wins: no server is
  started. ``MLC_ORCHESTRATION__KEEP_PREFECT_SERVER=false`` goes back to a temporary server
  per command.

Nothing that orders mlc's runs lives in the server: mlc's locks are rows in its own database
(:mod:`mlc_core.jobs.locks`), taken over from a dead holder after the claim lease, so a server
that outlives a killed command holds nothing of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib.metadata import version as installed_version
from pathlib import Path

from mlc_core.errors import MlcError

HOST = "127.0.0.1"
STATE_FILE = "server.json"
LOCK_FILE = "server.lock"
LOG_FILE = "server.log"
# A new server migrates its database first: about 15 s on an idle two-core machine, several
# times that on a busy one (the CLI gives the ephemeral mode the same time).
START_TIMEOUT_SECONDS = 180.0
# A started server that does not answer its health check within this long is taken for hung
# (a busy machine answers in well under a second).
HEALTH_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 15.0
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class KeptServer:
    """A server this module started: its process (the leader of its own process group), its
    port, when it started and the Prefect version it runs."""

    pid: int
    port: int
    started_at: float
    prefect_version: str

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"


def server_folder(home: Path) -> Path:
    """Where the kept server of ``home`` (``MLC_HOME``) keeps its database, log and record."""
    return (home / "prefect").resolve()


def recorded_server(folder: Path) -> KeptServer | None:
    """The server recorded in ``folder``, whether or not it still runs."""
    try:
        return KeptServer(**json.loads((folder / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def is_running(server: KeptServer) -> bool:
    """Whether the recorded process is alive and is that server (not a reused pid)."""
    try:
        stat = Path(f"/proc/{server.pid}/stat").read_text()
        command = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: all that can be told is whether the pid exists
        return _pid_exists(server.pid)
    if stat[stat.rindex(")") + 2 :].startswith(("Z", "X")):
        return False  # exited; its parent has not collected it yet
    return b"server" in command and str(server.port).encode() in command


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_healthy(server: KeptServer, timeout: float = HEALTH_TIMEOUT_SECONDS) -> bool:
    """Whether the server's API answers its health check within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(f"{server.api_url}/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold the folder's lock: one command at a time decides which server to use."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MlcError(
            f"cannot make {folder} for the Prefect server mlc keeps ({error.strerror}); set "
            "MLC_HOME to a folder mlc may write, PREFECT_API_URL to a Prefect server, or "
            "MLC_ORCHESTRATION__KEEP_PREFECT_SERVER=false"
        ) from None
    with (folder / LOCK_FILE).open("a") as lock:
        # Released by the kernel when the holder dies, so a killed command blocks nobody.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def start_or_reuse(home: Path) -> tuple[KeptServer, bool]:
    """The kept server of ``home``, and whether it was started now: the recorded one if it is
    alive, else a new one.

    A server returned may still be starting; :func:`wait_until_healthy` waits for it. A new
    one is started, and an old one stopped first, when the recorded one is gone, runs another
    Prefect version, or has not answered within ``HEALTH_TIMEOUT_SECONDS`` although it started
    more than ``START_TIMEOUT_SECONDS`` ago.
    """
    folder = server_folder(home)
    prefect_version = installed_version("prefect")
    with _locked(folder):
        server = recorded_server(folder)
        if server is not None and is_running(server):
            if server.prefect_version == prefect_version and _answers_or_starting(server):
                return server, False
            _terminate(server)
        return _spawn(folder, _port_for(server), prefect_version), True


def _answers_or_starting(server: KeptServer) -> bool:
    if is_healthy(server, timeout=1.0):
        return True
    if time.time() - server.started_at < START_TIMEOUT_SECONDS:
        return True  # another command started it; the caller waits for it to answer
    return is_healthy(server)


def _port_for(previous: KeptServer | None) -> int:
    """The previous server's port when it is free (the UI's address stays the same), else one
    the kernel picks."""
    ports = ([previous.port] if previous is not None else []) + [0]
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise MlcError(f"no free port on {HOST} for the Prefect server")


def _spawn(folder: Path, port: int, prefect_version: str) -> KeptServer:
    log = folder / LOG_FILE
    if log.exists():
        log.replace(folder / f"{LOG_FILE}.1")
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("PREFECT_API")
    }
    # Its own PREFECT_HOME: the server's database and settings live beside mlc's data.
    environment.update(PREFECT_HOME=str(folder), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST]
    with log.open("ab") as output:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=folder,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            # Its own session: a terminal closing, or a kill of the command's process group,
            # does not reach it.
            start_new_session=True,
        )
    server = KeptServer(process.pid, port, time.time(), prefect_version)
    temporary = folder / f"{STATE_FILE}.tmp"
    temporary.write_text(json.dumps(asdict(server)))
    temporary.replace(folder / STATE_FILE)
    return server


def wait_until_healthy(home: Path, server: KeptServer) -> None:
    """Wait until ``server`` answers.

    Raises:
        MlcError: it exited, or did not answer within ``START_TIMEOUT_SECONDS`` of its start
            (or ``HEALTH_TIMEOUT_SECONDS`` from now, if that is later); the message ends with
            the last lines of its log.
    """
    # A server that answered before and is slow now (a busy machine) gets a while more.
    deadline = max(server.started_at + START_TIMEOUT_SECONDS, time.time() + HEALTH_TIMEOUT_SECONDS)
    while not is_healthy(server, timeout=2.0):
        if not is_running(server):
            problem = f"the Prefect server kept for mlc (pid {server.pid}) stopped while starting"
        elif time.time() > deadline:
            problem = (
                f"the Prefect server kept for mlc (pid {server.pid}) does not answer at "
                f"{server.api_url}; `mlc server stop` stops it and the next command starts "
                "another"
            )
        else:
            time.sleep(POLL_SECONDS)
            continue
        log = server_folder(home) / LOG_FILE
        raise MlcError(f"{problem}; the end of its log {log}:\n{_tail(log)}")


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(home: Path) -> KeptServer | None:
    """Stop the kept server of ``home``; returns it, or ``None`` when none was running."""
    folder = server_folder(home)
    if not (folder / STATE_FILE).exists():
        return None
    with _locked(folder):
        server = recorded_server(folder)
        running = server is not None and is_running(server)
        if server is not None and running:
            _terminate(server)
        (folder / STATE_FILE).unlink(missing_ok=True)
    return server if running else None


def _terminate(server: KeptServer) -> None:
    """Stop the server's process group: politely, then by force."""
    for sent, wait in ((signal.SIGTERM, STOP_TIMEOUT_SECONDS), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.pid, sent)
        deadline = time.monotonic() + wait
        while is_running(server) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        if not is_running(server):
            return


def prefect_api_configured() -> bool:
    """Whether Prefect has an API to talk to already: ``PREFECT_API_URL`` in the environment,
    a Prefect profile or its settings files."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    from prefect.settings import get_current_settings

    return get_current_settings().api.url is not None


def point_prefect_at(server: KeptServer) -> None:
    """Make this process's Prefect client, and the processes it starts, use ``server``."""
    os.environ["PREFECT_API_URL"] = server.api_url
    # Prefect read its settings when it was imported; this is how it rereads them.
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()
