"""``mlc ui``: the web page for browsing tags, checking models and correcting tags."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.app import app, console, settings


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
    shown = f"[{bind_host}]" if ":" in bind_host else bind_host
    console.print(
        f"mlc ui on http://{shown}:{bind_port}/ (Ctrl-C stops it)"
        + ("; it needs the token in MLC_UI__TOKEN" if token else ""),
        highlight=False,
    )
    uvicorn.run(
        create_app(loaded),
        host=bind_host,
        port=bind_port,
        log_level="warning",
        # A page of thumbnails is many requests at once; the threads wait on the decoders.
        limit_concurrency=256,
    )
