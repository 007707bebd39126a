"""The web page of ``mlc ui``: an ASGI app over ``mlc_core``, thin like a flow.

:func:`create_app` wires the settings to the routes (``flows.ui.api`` for JSON,
``flows.ui.pages`` for HTML); every answer comes from ``mlc_core``, the same functions the
commands call. Errors map to statuses in one place: what was not found is a 404, a bad value a
400, a database or store that is down a 503 naming which (the next request tries again).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from flows.kept_server import is_running, recorded_server, server_folder
from flows.ui.security import refusal
from mlc_core.errors import (
    DatabaseError,
    MlcError,
    ObjectNotFound,
    StoreUnavailable,
    UnknownImage,
    UnknownModelVersion,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from mlc_core.jobs.workspace import Workspace
    from mlc_core.settings import Settings
    from mlc_core.thumbnails import ThumbnailCache

logger = logging.getLogger(__name__)
HERE = Path(__file__).parent
# Counting every tag scans the tag rows; a gallery page reuses the counts this long.
TAG_COUNTS_SECONDS = 30.0


class UIState:
    """What the app keeps between requests: the workspace (opened on first use and again
    after it failed), the thumbnail cache, the CSRF token, cached tag counts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.token = settings.ui.token.get_secret_value() if settings.ui.token else None
        self.csrf_token = secrets.token_urlsafe(32)
        self.prefect_ui_url = _prefect_ui_url(settings)
        self._workspace: Workspace | None = None
        self._thumbnails: ThumbnailCache | None = None
        self._lock = threading.Lock()
        self._tag_counts: dict[tuple[Any, ...], tuple[float, dict[str, int]]] = {}

    def workspace(self) -> Workspace:
        """The opened workspace.

        Raises:
            DatabaseUnavailable: the database cannot be reached (the next call tries again).
        """
        with self._lock:
            if self._workspace is None:
                from mlc_core.jobs.workspace import open_workspace

                self._workspace = open_workspace(self.settings, check_store=False)
            return self._workspace

    @contextmanager
    def session(self) -> Iterator[tuple[Workspace, Session]]:
        from mlc_core.jobs.browse import browsing

        workspace = self.workspace()
        with browsing(workspace) as session:
            yield workspace, session

    def thumbnails(self) -> ThumbnailCache:
        from mlc_core.thumbnails import ThumbnailCache

        workspace = self.workspace()
        with self._lock:
            if self._thumbnails is None:
                ui = self.settings.ui
                self._thumbnails = ThumbnailCache(
                    workspace.store,
                    self.settings.home.resolve() / "thumbnails",
                    max_bytes=ui.thumbnail_cache_mb * 1024 * 1024,
                    workers=ui.thumbnail_workers,
                    max_pixels=self.settings.scoring.max_image_pixels,
                    max_object_bytes=self.settings.scoring.max_object_bytes,
                )
            return self._thumbnails

    def tag_counts(
        self, key: tuple[Any, ...], count: Callable[[], dict[str, int]]
    ) -> dict[str, int]:
        now = time.monotonic()
        cached = self._tag_counts.get(key)
        if cached is not None and now - cached[0] < TAG_COUNTS_SECONDS:
            return cached[1]
        counts = count()
        self._tag_counts = {k: v for k, v in self._tag_counts.items() if now - v[0] < 60} | {
            key: (now, counts)
        }
        return counts

    def forget_tag_counts(self) -> None:
        """A correction changes the counts: the next page counts again."""
        self._tag_counts = {}

    def close(self) -> None:
        if self._workspace is not None:
            self._workspace.close()


def _prefect_ui_url(settings: Settings) -> str | None:
    """The Prefect UI to link runs to: ``PREFECT_UI_URL``, else the API's server, else the
    server kept for the job commands (when it runs as the page starts)."""
    ui = os.environ.get("PREFECT_UI_URL")
    api = os.environ.get("PREFECT_API_URL")
    if ui:
        return ui.rstrip("/")
    if api:
        return api.rstrip("/").removesuffix("/api")
    kept = recorded_server(server_folder(settings.home))
    if settings.orchestration.keep_prefect_server and kept is not None and is_running(kept):
        return kept.ui_url
    return None


def status_of(error: MlcError) -> tuple[int, str]:
    """The HTTP status of an error, and what failed, in a word."""
    if isinstance(error, UnknownImage | UnknownModelVersion | ObjectNotFound):
        return 404, "not found"
    if isinstance(error, DatabaseError):
        return 503, "database unavailable"
    if isinstance(error, StoreUnavailable):
        return 503, "store unavailable"
    return 400, "bad request"


def create_app(settings: Settings) -> FastAPI:
    """The web app over the workspace ``settings`` name."""
    from flows.ui import api, pages

    state = UIState(settings)
    app = FastAPI(title="mlc", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ui = state
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["keypath"] = pages.key_path
    app.state.templates = templates

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        refused = refusal(request, state.token)
        if refused is not None:
            return refused
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'",
        )
        return response

    @app.exception_handler(MlcError)
    async def mlc_error(request: Request, error: MlcError) -> Response:
        status, title = status_of(error)
        if status == 503:
            logger.warning("%s: %s", title, error)
        return error_response(request, status, title, str(error))

    @app.exception_handler(RequestValidationError)
    async def bad_value(request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in problem['loc'][1:])}: {problem['msg']}"
            for problem in error.errors()
        )
        return error_response(request, 400, "bad request", problems)

    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.router.add_event_handler("shutdown", state.close)
    return app


def error_response(request: Request, status: int, title: str, message: str) -> Response:
    """A JSON error for the API, an HTML page for everything else."""
    if request.url.path.startswith("/api/") or request.url.path == "/healthz":
        return JSONResponse({"error": message}, status_code=status)
    templates: Jinja2Templates = request.app.state.templates
    response: HTMLResponse = templates.TemplateResponse(
        request,
        "error.html",
        {"title": title, "message": message, "status": status},
        status_code=status,
    )
    return response
