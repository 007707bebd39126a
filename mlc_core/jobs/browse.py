"""What the web page (``mlc ui``) asks: the same questions as ``mlc tags``, ``show``, ``review``,
``models`` and ``runs``, in the shapes a page shows, with images named by their store keys.

The page reads filters as text from a URL; :func:`gallery_query` turns them into the
:class:`~mlc_core.db.tag_search.TagQuery` ``mlc tags`` builds, with the same errors, so the
page and the command answer the same question the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from mlc_core.db.engine import database_failure
from mlc_core.db.image_detail import ImageDetail, VersionScores, describe_image, scores_by_version
from mlc_core.db.images import count_failures_by_reason
from mlc_core.db.model_versions import get_champion, list_model_versions, require_model_version
from mlc_core.db.models import ModelVersion, Run
from mlc_core.db.runs import recent_runs
from mlc_core.db.tag_search import ClassBand, TagQuery, require_known_tags
from mlc_core.errors import MlcError, StorageError
from mlc_core.jobs.corrections import registered_uri
from mlc_core.jobs.scoring.reports import reason_kind
from mlc_core.jobs.workspace import Workspace
from mlc_core.labels import normalize_tag
from mlc_core.storage import ObjectStore, key_for_uri, validate_key

logger = logging.getLogger(__name__)


class BadFilter(MlcError):
    """A filter value the page cannot use; the message says which and why."""


@contextmanager
def browsing(workspace: Workspace) -> Iterator[Session]:
    """A transaction whose driver errors become :class:`~mlc_core.errors.DatabaseError`
    sentences (unreachable: ``DatabaseUnavailable``), as the page shows them."""
    try:
        with workspace.transaction() as session:
            yield session
    except DBAPIError as error:
        raise database_failure(workspace.engine, error) from error


def tags_of(values: Sequence[str]) -> tuple[str, ...]:
    """Tags from form fields, each of which may hold several separated by commas or spaces."""
    tags = [part for value in values for part in value.replace(",", " ").split()]
    try:
        return tuple(dict.fromkeys(normalize_tag(tag) for tag in tags))
    except ValueError as error:
        raise BadFilter(str(error)) from None


def one_tag(text: str) -> str | None:
    """The one tag a field names (None when it is blank).

    Raises:
        BadFilter: the field names a malformed tag, or more than one.
    """
    tags = tags_of([text])
    if len(tags) > 1:
        raise BadFilter(f"{text!r}: name one tag here")
    return tags[0] if tags else None


def gallery_query(
    session: Session,
    store: ObjectStore,
    *,
    all_tags: Sequence[str] = (),
    any_tags: Sequence[str] = (),
    none_tags: Sequence[str] = (),
    min_probability: float | None = None,
    band: tuple[str, float, float] | None = None,
    model: str | None = None,
    prefix: str = "",
    after: str | None = None,
    limit: int = 60,
    source: str | None = None,
) -> tuple[TagQuery, int | None]:
    """The query ``mlc tags`` would run for these filters, and the model version's id.

    Raises:
        BadFilter: a malformed tag, prefix or key, or values that contradict each other.
        UnknownTag: a tag nothing knows (with close matches).
        UnknownModelVersion: ``model`` names no version.
    """
    wanted_all, wanted_any, unwanted = tags_of(all_tags), tags_of(any_tags), tags_of(none_tags)
    band_tag = one_tag(band[0]) if band else None
    if min_probability is not None and not wanted_all:
        raise BadFilter("the minimum probability applies to the all tags; name at least one")
    for what, key in (("prefix", prefix.removesuffix("/")), ("after", after)):
        if key:
            try:
                validate_key(key)
            except StorageError as error:
                raise BadFilter(f"{what}: {error}") from None
    require_known_tags(session, [*wanted_all, *wanted_any, *unwanted, *filter(None, [band_tag])])
    version_id = None if model is None else require_model_version(session, model).id
    try:
        query = TagQuery(
            all_tags=wanted_all,
            any_tags=wanted_any,
            none_tags=unwanted,
            min_probability=min_probability,
            model_version=model,
            uri_prefix=store.root_uri + prefix if prefix else "",
            band=ClassBand(band_tag, band[1], band[2]) if band and band_tag else None,
            # The page cursor must name a known image: said by its key, with keys like it.
            after_uri=None if after is None else registered_uri(session, store, after),
            limit=limit,
            source=source,
        )
    except ValueError as error:
        raise BadFilter(str(error)) from None
    return query, version_id


@dataclass(frozen=True)
class ImageView:
    """One image as its page shows it: what ``mlc show`` says, and every version's scores."""

    key: str
    detail: ImageDetail
    versions: tuple[VersionScores, ...]


def image_view(session: Session, store: ObjectStore, key: str) -> ImageView:
    """Everything known of the image at ``key``.

    Raises:
        MlcError: the key is malformed.
        UnknownImage: no image has this key.
    """
    uri = registered_uri(session, store, key)
    detail = describe_image(session, uri)
    assert detail is not None  # registered_uri found it
    return ImageView(key, detail, tuple(scores_by_version(session, uri)))


def thumbnail_source(session: Session, store: ObjectStore, key: str) -> ImageDetail:
    """What a thumbnail of ``key`` needs: the newest version's etag, status and failure.

    Raises:
        MlcError: the key is malformed.
        UnknownImage: no image has this key.
    """
    detail = describe_image(session, registered_uri(session, store, key))
    assert detail is not None  # registered_uri found it
    return detail


@dataclass(frozen=True)
class ClassComparison:
    """One class's average precision under a version and under the champion."""

    name: str
    threshold: float | None
    average_precision: float | None
    champion_average_precision: float | None


@dataclass(frozen=True)
class ModelView:
    """A model version with its per-class figures beside the champion's."""

    version: ModelVersion
    mean_average_precision: float | None
    classes: tuple[ClassComparison, ...]
    compared_on: str


def models_view(session: Session, store: ObjectStore) -> list[ModelView]:
    """Every model version, newest first, each class beside the champion's AP.

    A version's card (in the store) holds both models' metrics on the champion's own test
    images when it was trained against one: those are compared where the card can be read;
    otherwise each model's metrics on its own test split are.
    """
    champion = get_champion(session)
    return [_model_view(store, version, champion) for version in list_model_versions(session)]


def _model_view(
    store: ObjectStore, version: ModelVersion, champion: ModelVersion | None
) -> ModelView:
    mine = _per_class(version.metrics)
    theirs: dict[str, float | None] = {} if champion is None else _per_class(champion.metrics)
    compared_on = "each model's own test images"
    comparison = _card_comparison(store, version) if champion is not version else None
    if comparison is not None:
        mine = _per_class(comparison.get("candidate") or {}) or mine
        theirs = _per_class(comparison.get("champion") or {}) or theirs
        compared_on = "the champion's test images, when this version was trained"
    thresholds = dict(zip(version.classes, version.thresholds, strict=True))
    names = list(dict.fromkeys([*version.classes, *mine, *theirs]))
    return ModelView(
        version=version,
        mean_average_precision=_number(version.metrics.get("mean_average_precision")),
        classes=tuple(
            ClassComparison(
                name,
                _number(thresholds.get(name)),
                mine.get(name),
                None if champion is version else theirs.get(name),
            )
            for name in names
        ),
        compared_on=compared_on,
    )


def _per_class(metrics: dict[str, Any]) -> dict[str, float | None]:
    per_class = metrics.get("average_precision")
    if not isinstance(per_class, dict):
        return {}
    return {str(name): _number(value) for name, value in per_class.items()}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _card_comparison(store: ObjectStore, version: ModelVersion) -> dict[str, Any] | None:
    key = key_for_uri(store, version.card_uri)
    if key is None:
        return None
    try:
        card = json.loads(store.get(key, max_bytes=4 * 1024 * 1024))
    except (StorageError, ValueError) as error:
        logger.info("model card of %s not read: %s", version.version, error)
        return None
    comparison = (card.get("extra") or {}).get("champion_comparison")
    return comparison if isinstance(comparison, dict) else None


@dataclass(frozen=True)
class RunsView:
    """Recent runs, and how many images failed for each kind of reason."""

    runs: tuple[Run, ...]
    failures_by_reason: dict[str, int] = field(default_factory=dict)


def runs_view(session: Session, *, limit: int = 50) -> RunsView:
    """The latest runs (newest first) and the failure ledger counted by kind of reason."""
    by_kind: dict[str, int] = {}
    for reason, count in count_failures_by_reason(session).items():
        by_kind[reason_kind(reason)] = by_kind.get(reason_kind(reason), 0) + count
    ordered = dict(sorted(by_kind.items(), key=lambda item: (-item[1], item[0])))
    return RunsView(tuple(recent_runs(session, limit=limit)), ordered)
