"""The review list: the images whose label would teach the next model most.

An image whose probability sits right at its class threshold is the one the model is least
sure of (uncertainty sampling), so a person's word on it moves the decision boundary most.
The list reads the shown scores page by page and keeps the nearest ``n`` in a heap, so its
memory is flat in the number of images; images a person already labelled are skipped (for one
tag: those with a label on that tag), since a second look at them teaches nothing.

Functions take a session and never commit.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session

from mlc_core.db._statements import starts_with_any
from mlc_core.db.models import Image, Label, ModelVersion
from mlc_core.db.views import shown_scores

PAGE_SIZE = 5000


@dataclass(frozen=True, order=True)
class ReviewItem:
    """One image for review: its class nearest the threshold, and how near."""

    distance: float
    uri: str
    tag: str
    probability: float
    threshold: float
    model_version: str


def review_list(
    session: Session, *, n: int, tag: str | None = None, uri_prefix: str = ""
) -> list[ReviewItem]:
    """The ``n`` images (of ``tag``'s class, or over every class) nearest their thresholds,
    nearest first, none that a person already labelled.

    Raises:
        ValueError: ``n`` is below 1.
    """
    if n < 1:
        raise ValueError(f"the review list needs at least 1 image, got {n}")
    return heapq.nsmallest(n, _candidates(session, tag, uri_prefix))


def _candidates(session: Session, tag: str | None, uri_prefix: str) -> Iterator[ReviewItem]:
    versions: dict[int, ModelVersion] = {}
    after = 0
    while True:
        page = session.execute(_page(tag, uri_prefix, after)).all()
        if not page:
            return
        for image_id, uri, version_id, probabilities in page:
            version = versions.get(version_id) or versions.setdefault(
                version_id, session.get_one(ModelVersion, version_id)
            )
            item = _nearest(uri, version, probabilities, tag)
            if item is not None:
                yield item
            after = image_id


def _page(tag: str | None, uri_prefix: str, after: int) -> Select[Any, str, Any, Any]:
    labelled = exists().where(Label.image_uri == Image.uri)
    if tag is not None:
        labelled = labelled.where(Label.tag == tag)
    statement = (
        select(
            shown_scores.c.image_id,
            Image.uri,
            shown_scores.c.model_version_id,
            shown_scores.c.probabilities,
        )
        .join(Image, Image.id == shown_scores.c.image_id)
        .where(shown_scores.c.image_id > after, ~labelled)
        .order_by(shown_scores.c.image_id)
        .limit(PAGE_SIZE)
    )
    if uri_prefix:
        statement = statement.where(starts_with_any(Image.uri, [uri_prefix]))
    return statement


def _nearest(
    uri: str, version: ModelVersion, probabilities: list[float], tag: str | None
) -> ReviewItem | None:
    classes = version.classes
    positions = (
        range(len(classes)) if tag is None else [i for i, c in enumerate(classes) if c == tag]
    )
    best: ReviewItem | None = None
    for i in positions:
        probability, threshold = float(probabilities[i]), float(version.thresholds[i])
        item = ReviewItem(
            round(abs(probability - threshold), 6),
            uri,
            classes[i],
            probability,
            threshold,
            version.version,
        )
        best = item if best is None or item < best else best
    return best
