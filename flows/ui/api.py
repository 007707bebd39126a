"""The JSON API the page uses, documented in the README: images, one image, labels, review."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from flows.cli.labels import correction_source
from flows.ui.app import UIState
from mlc_core.errors import MlcError

router = APIRouter()
Tags = Annotated[list[str], Query(default_factory=list)]


def ui_state(request: Request) -> UIState:
    state: UIState = request.app.state.ui
    return state


def parse_band(band: str | None) -> tuple[str, float, float] | None:
    """``TAG,LOW,HIGH`` (as ``mlc tags --band TAG LOW HIGH``)."""
    if band is None:
        return None
    parts = band.split(",")
    try:
        tag, low, high = parts[0], float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        raise MlcError(f"band {band!r}: write TAG,LOW,HIGH, e.g. sky,0.4,0.6") from None
    if len(parts) != 3:
        raise MlcError(f"band {band!r}: write TAG,LOW,HIGH, e.g. sky,0.4,0.6")
    return tag, low, high


def find_images(
    state: UIState,
    *,
    all_tags: list[str],
    any_tags: list[str],
    none_tags: list[str],
    min_probability: float | None,
    band: str | None,
    model: str | None,
    prefix: str,
    after: str | None,
    limit: int,
    source: str | None,
) -> dict[str, Any]:
    """The gallery's page of images, as ``mlc tags --format jsonl`` writes each one."""
    from mlc_core.db.tag_search import search_tags
    from mlc_core.jobs.browse import gallery_query
    from mlc_core.reports.tags import found_image_record
    from mlc_core.storage import key_for_uri

    with state.session() as (workspace, session):
        query, version_id = gallery_query(
            session,
            workspace.store,
            all_tags=all_tags,
            any_tags=any_tags,
            none_tags=none_tags,
            min_probability=min_probability,
            band=parse_band(band),
            model=model or None,
            prefix=prefix,
            after=after or None,
            limit=limit,
            source=source or None,
        )
        found = search_tags(session, query, model_version_id=version_id)

        def key_of(uri: str) -> str:
            return key_for_uri(workspace.store, uri) or uri

    images = [found_image_record(image, key_of) for image in found]
    more = len(found) == query.limit
    return {"images": images, "next_after": images[-1]["key"] if more and images else None}


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    """Alive, and whether the database answers (no details: this needs no token)."""
    state = ui_state(request)
    try:
        with state.session() as (_, session):
            session.connection()
    except MlcError:
        return JSONResponse({"status": "unavailable", "unavailable": "database"}, 503)
    return JSONResponse({"status": "ok"})


@router.get("/api/images")
def api_images(
    request: Request,
    all_tags: Annotated[list[str], Query(alias="all", default_factory=list)],
    any_tags: Annotated[list[str], Query(alias="any", default_factory=list)],
    none_tags: Annotated[list[str], Query(alias="none", default_factory=list)],
    min_probability: Annotated[float | None, Query(ge=0, le=1)] = None,
    band: str | None = None,
    model: str | None = None,
    prefix: str = "",
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    source: str | None = None,
) -> dict[str, Any]:
    """Images by their current tags, ordered by key, a page at a time (``after``)."""
    return find_images(
        ui_state(request),
        all_tags=all_tags,
        any_tags=any_tags,
        none_tags=none_tags,
        min_probability=min_probability,
        band=band,
        model=model,
        prefix=prefix,
        after=after,
        limit=limit,
        source=source,
    )


@router.get("/api/images/{key:path}")
def api_image(request: Request, key: str) -> JSONResponse:
    """Everything known of one image, as ``mlc show --format json`` says it, and the scores of
    every model version that scored it."""
    from mlc_core.jobs.browse import image_view

    with ui_state(request).session() as (workspace, session):
        view = image_view(session, workspace.store, key)
    body = {"key": key, **asdict(view.detail), "versions": [asdict(v) for v in view.versions]}
    return JSONResponse(json.loads(json.dumps(body, default=str)))


class LabelChange(BaseModel):
    key: str
    add: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


@router.post("/api/labels")
def api_labels(request: Request, change: LabelChange) -> dict[str, Any]:
    """Correct one image's tags, as ``mlc labels set KEY +ADD -REMOVE`` does."""
    correction = record_correction(ui_state(request), change.key, change.add, change.remove)
    return asdict(correction)


def record_correction(state: UIState, key: str, add: list[str], remove: list[str]) -> Any:
    from mlc_core.jobs.browse import tags_of
    from mlc_core.jobs.corrections import correct_tags

    with state.session() as (workspace, session):
        correction = correct_tags(
            session,
            workspace.store,
            key,
            add=tags_of(add),
            remove=tags_of(remove),
            source=correction_source("mlc ui"),
        )
    state.forget_tag_counts()
    return correction


@router.get("/api/review")
def api_review(
    request: Request,
    n: Annotated[int, Query(ge=1, le=10_000)] = 50,
    tag: str | None = None,
    prefix: str = "",
) -> dict[str, Any]:
    """The images of ``mlc review``: probabilities nearest their thresholds, nearest first."""
    items, key_of = review_items(ui_state(request), n=n, tag=tag, prefix=prefix)
    return {"items": [{"key": key_of(item.uri), **asdict(item)} for item in items]}


def review_items(state: UIState, *, n: int, tag: str | None, prefix: str) -> tuple[list[Any], Any]:
    from mlc_core.db.review import review_list
    from mlc_core.db.tag_search import require_known_tags
    from mlc_core.jobs.browse import one_tag
    from mlc_core.storage import key_for_uri

    wanted = one_tag(tag) if tag else None
    with state.session() as (workspace, session):
        if wanted:
            require_known_tags(session, [wanted])
        prefix_uri = workspace.store.root_uri + prefix if prefix else ""
        items = review_list(session, n=n, tag=wanted, uri_prefix=prefix_uri)
    store = workspace.store
    return items, lambda uri: key_for_uri(store, uri) or uri
