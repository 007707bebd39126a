"""``mlc server``: the local Prefect server kept between commands (:mod:`flows.kept_server`)."""

from __future__ import annotations

import time

import typer

from flows import kept_server
from flows.cli.app import app, console, settings
from mlc_core.errors import MlcError

server_app = typer.Typer(
    no_args_is_help=True,
    help="The local Prefect server that records runs on the embedded defaults.",
)
app.add_typer(server_app, name="server")


@server_app.command("start")
def start() -> None:
    """Start the kept Prefect server now (the first command that runs a flow would)."""
    chosen = settings()
    if kept_server.prefect_api_configured():
        raise MlcError("PREFECT_API_URL is set: mlc records runs there and keeps no server")
    if not chosen.orchestration.keep_prefect_server:
        raise MlcError(
            "MLC_ORCHESTRATION__KEEP_PREFECT_SERVER is false: each command starts a temporary "
            "server instead"
        )
    server, started = kept_server.start_or_reuse(chosen.home)
    kept_server.wait_until_healthy(chosen.home, server)
    verb = "started" if started else "already running:"
    _say(f"{verb} {_describe(server)}")


@server_app.command("stop")
def stop() -> None:
    """Stop the kept Prefect server (a later command that runs a flow starts it again)."""
    home = settings().home
    server = kept_server.stop(home)
    if server is None:
        _say(f"no Prefect server is kept for {home}")
        return
    _say(f"stopped {_describe(server)}")


@server_app.command("status")
def status() -> None:
    """Say whether the kept Prefect server runs and answers, and where its UI is."""
    home = settings().home
    server = kept_server.recorded_server(kept_server.server_folder(home))
    if server is None or not kept_server.is_running(server):
        _say(f"no Prefect server is kept for {home}")
    else:
        answers = "answering" if kept_server.is_healthy(server) else "not answering"
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(server.started_at))
        _say(f"{_describe(server)}, started {started}, {answers}")
    if kept_server.prefect_api_configured():
        _say("PREFECT_API_URL is set: commands record their runs there, not on a kept server")


def _describe(server: kept_server.KeptServer) -> str:
    return (
        f"the Prefect server kept for mlc at {server.ui_url} "
        f"(pid {server.pid}, Prefect {server.prefect_version})"
    )


def _say(text: str) -> None:
    # One line whatever the terminal's width: an address to copy must not wrap.
    console.print(text, highlight=False, markup=False, soft_wrap=True)
