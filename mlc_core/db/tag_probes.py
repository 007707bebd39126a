"""The filters of a tag question as probes of one image (the outer ``images`` row).

Each is a condition on the image row :mod:`mlc_core.db.tag_search` walks, so PostgreSQL checks
it by index lookups for each image the walk reaches and stops at the page's end. What the views
show is read from the rows ``current_tags`` presents, kept in ``shown_tags`` (see
:mod:`mlc_core.db.shown_tags`: the shown version's tags, people's labels winning over them, an
image whose latest scoring failed showing no model tags); one version's own tags from
``image_tags``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    and_,
    case,
    exists,
    false,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session

from mlc_core.db.models import Image, ImageTag, ModelVersion, Score, ShownTag
from mlc_core.errors import UnknownTag

if TYPE_CHECKING:
    from mlc_core.db.tag_search import ClassBand


def shows_model_tags() -> ColumnElement[bool]:
    """The image shows a model's tags at all: it has a shown version and its latest scoring
    did not fail (the rule of ``current_tags``)."""
    return and_(Image.shown_model_version_id.is_not(None), Image.status != "failed")


def model_says(
    tags: Sequence[str] | None, model_version_id: int | None, min_probability: float | None
) -> ColumnElement[bool]:
    """A model tagged the image (the outer ``images`` row) with one of ``tags`` (None: with
    any tag), as the views show it (the shown version, unless a person's label on that tag
    overrides it); or version ``model_version_id`` did."""
    if model_version_id is None:
        return shown(tags, source="model", min_probability=min_probability)
    said = [ImageTag.image_id == Image.id, ImageTag.model_version_id == model_version_id]
    if tags is not None:
        said.append(ImageTag.tag.in_(list(tags)))
    if min_probability is not None:
        said.append(ImageTag.probability >= min_probability)
    return _probe(*said)


def shown(
    tags: Sequence[str] | None,
    *,
    source: str | None = None,
    min_probability: float | None = None,
) -> ColumnElement[bool]:
    """The views show the image with one of ``tags`` (None: any tag), from ``source`` if
    named; ``min_probability`` holds for a model's tag, and a person's addition passes it (a
    person's statement is not a guess)."""
    condition = [ShownTag.image_id == Image.id]
    if tags is not None:
        condition.append(ShownTag.tag.in_(list(tags)))
    if source is not None:
        condition.append(ShownTag.source == source)
    if min_probability is not None:
        condition.append(or_(ShownTag.source == "human", ShownTag.probability >= min_probability))
    return _probe(*condition)


def _probe(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """Some tag row of the image meets ``conditions``, checked by one index probe per image.

    A scalar subquery, not an EXISTS: PostgreSQL may turn an EXISTS (above all a negated one)
    into a hash of every row of the tag, built before the first image, where this is one probe
    per image the walk reaches (``one tag and none of another``: 276 ms at a million images
    with EXISTS)."""
    return select(literal(1)).where(*conditions).limit(1).scalar_subquery().is_not(None)


def person_says(tags: Sequence[str] | None) -> ColumnElement[bool]:
    """A person's label gives the image one of ``tags`` (None: any tag)."""
    return shown(tags, source="human")


def carries(
    tags: Sequence[str] | None,
    model_version_id: int | None,
    min_probability: float | None = None,
    source: str | None = None,
) -> ColumnElement[bool]:
    """The image carries one of ``tags`` (None: any tag) as the views show it (a person's
    addition passes ``min_probability``), from ``source`` if named; or as version
    ``model_version_id`` said."""
    if model_version_id is not None:
        return false() if source == "human" else model_says(tags, model_version_id, min_probability)
    return shown(tags, source=source, min_probability=min_probability)


def seen(model_version_id: int | None) -> ColumnElement[bool]:
    """The image has an answer: a shown score or a person's label (or a score of the version)."""
    if model_version_id is not None:
        return exists().where(
            Score.image_id == Image.id, Score.model_version_id == model_version_id
        )
    return or_(shows_model_tags(), person_says(None))


def in_band(session: Session, band: ClassBand, model_version_id: int | None) -> ColumnElement[bool]:
    """The image's probability of ``band.tag`` lies in the band, under its shown version (or
    under version ``model_version_id``); each version keeps its own class order."""
    if model_version_id is not None:
        version = session.get_one(ModelVersion, model_version_id)
        if band.tag not in version.classes:
            raise UnknownTag(band.tag, [], list(version.classes))
        versions = [version]
    else:
        versions = [
            version
            for version in session.scalars(
                select(ModelVersion).where(ModelVersion.promoted_at.is_not(None))
            )
            if band.tag in version.classes
        ]
    if not versions:
        return false()
    position = {v.id: Score.probabilities[v.classes.index(band.tag)].as_float() for v in versions}
    # A scalar lookup of the one score row, not an EXISTS: PostgreSQL turns an EXISTS into a
    # hash of every score in the band, and the walk then stops early no more.
    probability = (
        select(case(position, value=Score.model_version_id))
        .where(
            Score.image_id == Image.id,
            Score.model_version_id
            == (model_version_id if model_version_id is not None else Image.shown_model_version_id),
        )
        .scalar_subquery()
    )
    has_score = true() if model_version_id is not None else shows_model_tags()
    return and_(has_score, probability.between(band.low, band.high))


def version_name(model_version_id: int | None) -> ScalarSelect[str]:
    if model_version_id is not None:
        return (
            select(ModelVersion.version)
            .where(ModelVersion.id == model_version_id)
            .scalar_subquery()
        )
    return (
        select(ModelVersion.version)
        .where(ModelVersion.id == Image.shown_model_version_id, Image.status != "failed")
        .scalar_subquery()
    )
