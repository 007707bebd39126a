"""The HTML pages: gallery, image, review queue, models, runs; and the thumbnails they show.

Pages are rendered on the server (Jinja2 escapes every key and tag); the only script is the
review queue's keyboard shortcuts. Corrections are plain form posts carrying the CSRF token,
answered with a redirect to the page, which then shows the correction.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from flows.ui.api import find_images, record_correction, review_items, ui_state
from flows.ui.app import error_response
from flows.ui.placeholder import placeholder_svg
from flows.ui.security import csrf_valid
from mlc_core.errors import MlcError, ObjectNotFound

router = APIRouter()
SOURCES = ("model", "human")
THUMBNAIL_SIDES = {"small": 256, "large": 1024}


def key_path(key: str) -> str:
    """A key as a URL path, each segment percent-encoded (``/`` kept)."""
    return quote(key, safe="/")


def render(request: Request, template: str, **context: Any) -> HTMLResponse:
    state = ui_state(request)
    context.setdefault("csrf_token", state.csrf_token)
    response: HTMLResponse = request.app.state.templates.TemplateResponse(
        request, template, context
    )
    return response


@router.get("/", response_class=HTMLResponse)
def gallery(
    request: Request,
    all_tags: Annotated[list[str], Query(alias="all", default_factory=list)],
    any_tags: Annotated[list[str], Query(alias="any", default_factory=list)],
    none_tags: Annotated[list[str], Query(alias="none", default_factory=list)],
    min_probability: Annotated[str, Query()] = "",
    model: str = "",
    prefix: str = "",
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 60,
    source: str = "",
) -> HTMLResponse:
    """Thumbnails with their tags, the filters of ``mlc tags``, counts per tag, keyset paging."""
    from mlc_core.db.model_versions import list_model_versions
    from mlc_core.db.tag_search import count_tags

    state = ui_state(request)
    probability = _probability(min_probability)
    found = find_images(
        state,
        all_tags=all_tags,
        any_tags=any_tags,
        none_tags=none_tags,
        min_probability=probability,
        band=None,
        model=model or None,
        prefix=prefix,
        after=after,
        limit=limit,
        source=source or None,
    )
    with state.session() as (workspace, session):
        known = {v.version: v.id for v in list_model_versions(session)}
        version_id = known.get(model)
        prefix_uri = workspace.store.root_uri + prefix if prefix else ""

        def count() -> dict[str, int]:
            return count_tags(
                session,
                model_version_id=version_id,
                uri_prefix=prefix_uri,
                source=source or None,
            )

        counts = state.tag_counts((version_id, prefix_uri, source), count)
    filters = {
        "all": " ".join(all_tags),
        "any": " ".join(any_tags),
        "none": " ".join(none_tags),
        "min_probability": min_probability,
        "model": model,
        "prefix": prefix,
        "source": source,
        "limit": limit,
    }
    next_page = None
    if found["next_after"]:
        next_page = "/?" + urlencode({**_set(filters), "after": found["next_after"]})
    return render(
        request,
        "gallery.html",
        images=found["images"],
        filters=filters,
        counts=counts,
        versions=list(known),
        sources=SOURCES,
        next_page=next_page,
        first_page="/?" + urlencode(_set(filters)) if after else None,
        tag_link=lambda tag: "/?" + urlencode({**_set(filters), "all": f"{filters['all']} {tag}"}),
    )


def _set(filters: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in filters.items() if v not in ("", None)}


def _probability(text: str) -> float | None:
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise MlcError(f"minimum probability {text!r} is not a number between 0 and 1") from None
    if not 0 <= value <= 1:
        raise MlcError(f"minimum probability {value:g} is not between 0 and 1")
    return value


@router.get("/images/{key:path}", response_class=HTMLResponse)
def image_page(request: Request, key: str) -> HTMLResponse:
    """One image: probabilities beside thresholds, tags with their source, every version's
    scores, its failure, and the buttons that correct it."""
    from mlc_core.jobs.browse import image_view

    with ui_state(request).session() as (workspace, session):
        view = image_view(session, workspace.store, key)
    return render(request, "image.html", view=view, detail=view.detail, key=key)


@router.post("/labels")
async def labels_form(request: Request) -> Response:
    """A correction from a page's buttons: ``key``, ``add`` and ``remove``, with the CSRF
    token; back to the page it came from (``next``, a path on this site)."""
    form = await _form(request)
    if not csrf_valid(form.get("csrf", [None])[0], ui_state(request).csrf_token):
        return error_response(
            request, 403, "forbidden", "the form's CSRF token is missing or stale; reload the page"
        )
    key = form.get("key", [""])[0]
    await run_in_threadpool(
        record_correction, ui_state(request), key, form.get("add", []), form.get("remove", [])
    )
    target = form.get("next", [""])[0]
    if not target.startswith("/") or target.startswith("//"):
        target = "/images/" + key_path(key)
    return RedirectResponse(target, status_code=303)


async def _form(request: Request) -> dict[str, list[str]]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != "application/x-www-form-urlencoded":
        raise MlcError("a form post is sent as application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > 64 * 1024:
        raise MlcError("the form is larger than a correction can be")
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=False)


@router.get("/review", response_class=HTMLResponse)
def review_page(
    request: Request,
    position: Annotated[int, Query(ge=0, le=9_999)] = 0,
    tag: str = "",
    prefix: str = "",
) -> HTMLResponse:
    """The review queue one image at a time: y confirms the tag, n rejects it, s skips."""
    items, key_of = review_items(ui_state(request), n=position + 1, tag=tag or None, prefix=prefix)
    item = items[position] if position < len(items) else None
    query = _set({"tag": tag, "prefix": prefix})
    return render(
        request,
        "review.html",
        item=item,
        key=key_of(item.uri) if item else None,
        position=position,
        here="/review?" + urlencode({**query, "position": position}),
        skip="/review?" + urlencode({**query, "position": position + 1}),
        back="/review?" + urlencode({**query, "position": max(position - 1, 0)}),
    )


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request) -> HTMLResponse:
    """Every model version with its per-class AP beside the champion's, thresholds, status
    and promotion decision."""
    from mlc_core.jobs.browse import models_view

    with ui_state(request).session() as (workspace, session):
        views = models_view(session, workspace.store)
    return render(request, "models.html", views=views, only=None)


@router.get("/models/{version}", response_class=HTMLResponse)
def model_page(request: Request, version: str) -> HTMLResponse:
    from mlc_core.db.model_versions import require_model_version
    from mlc_core.jobs.browse import models_view

    with ui_state(request).session() as (workspace, session):
        require_model_version(session, version)
        views = [v for v in models_view(session, workspace.store) if v.version.version == version]
    return render(request, "models.html", views=views, only=version)


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> HTMLResponse:
    """Recent runs with counts, images/s, drift flags; failures by reason; Prefect links."""
    from mlc_core.jobs.browse import runs_view

    state = ui_state(request)
    with state.session() as (_, session):
        view = runs_view(session, limit=limit)
    return render(request, "runs.html", view=view, prefect=state.prefect_ui_url)


@router.get("/thumbnails/{key:path}")
def thumbnail(request: Request, key: str, size: str = "small") -> Response:
    """The image at ``key`` shrunk for a page; a placeholder with the reason where it cannot
    be shown (its scoring failed, it is gone, it does not decode)."""
    from mlc_core.jobs.browse import thumbnail_source
    from mlc_core.thumbnails import ThumbnailFailure

    if size not in THUMBNAIL_SIDES:
        raise MlcError(f"thumbnail size {size!r}: expected one of {', '.join(THUMBNAIL_SIDES)}")
    state = ui_state(request)
    with state.session() as (workspace, session):
        detail = thumbnail_source(session, workspace.store, key)
    if detail.status == "failed" and detail.error:
        return _placeholder(detail.error)
    try:
        made = state.thumbnails().thumbnail(key, detail.etag, THUMBNAIL_SIDES[size])
    except ObjectNotFound:
        return _placeholder("gone from the store")
    if isinstance(made, ThumbnailFailure):
        return _placeholder(made.reason)
    return Response(
        made, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )


def _placeholder(reason: str) -> Response:
    return Response(
        placeholder_svg(reason), media_type="image/svg+xml", headers={"Cache-Control": "no-store"}
    )
