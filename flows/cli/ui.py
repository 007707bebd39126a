"""``mlc ui``: the web page for browsing tags, checking models and correcting tags."""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from flows.cli.app import app, console, settings
from mlc_core.errors import MlcError


def check_port_free(host: str, port: int) -> None:
    """Fail in one sentence now rather than in uvicorn's log when the address is taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise MlcError(f"cannot listen on {host}: {error.strerror or error}") from None
    family, kind, _, _, address = infos[0]
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise MlcError(
                f"cannot listen on {host}:{port}: {error.strerror or error}; is another "
                "mlc ui running there? Choose another --port"
            ) from None


@app.command()
def ui(
    host: Annotated[
        str | None, typer.Option(help="address to bind (default MLC_UI__HOST, 127.0.0.1)")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="port to listen on (default MLC_UI__PORT, 8765)"),
    ] = None,
) -> None:
    """Serve the web page: gallery, image pages with corrections, review queue, models, runs."""
    import uvicorn

    from flows.ui import create_app
    from flows.ui.security import check_bind

    loaded = settings()
    bind_host = host or loaded.ui.host
    bind_port = port or loaded.ui.port
    token = loaded.ui.token.get_secret_value() if loaded.ui.token else None
    check_bind(bind_host, token)
    check_port_free(bind_host, bind_port)
    shown = f"[{bind_host}]" if ":" in bind_host else bind_host
    console.print(
        f"mlc ui on http://{shown}:{bind_port}/ (Ctrl-C stops it)"
        + ("; it needs the token in MLC_UI__TOKEN" if token else ""),
        highlight=False,
        soft_wrap=True,
    )
    uvicorn.run(
        create_app(loaded),
        host=bind_host,
        port=bind_port,
        log_level="warning",
        # A page of thumbnails is many requests at once; the threads wait on the decoders.
        limit_concurrency=256,
    )
