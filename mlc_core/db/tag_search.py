"""Which images carry which tags: the questions ``mlc tags``, the export and the web page ask.

By default every answer comes from the ``current_tags`` view (people's labels win over models;
see :mod:`mlc_core.db.views`), so the command line and SQL never disagree. Asked about one
model version, the same query runs over what that version itself said of the current images,
with no labels applied: that is how a person compares versions.

A query is one walk over the current images in id order (the order mlc first saw them), every
filter a probe of one image (``EXISTS`` on its tags, labels or score), paged by the last image
seen (keyset). The first page then costs about ``limit / share of matching images`` index
lookups whatever the collection's size: ordering by URI instead meant joining every image
that carries the tag and sorting them (linear in the tag's size; 1.4 s at 100,000 images).
The rules are those of the ``current_tags`` view, read from the shown version kept on the
image row (see :mod:`mlc_core.db.shown`).

Functions take a session and never commit.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    FromClause,
    Row,
    Select,
    func,
    literal,
    select,
)
from sqlalchemy.orm import Session

from mlc_core.db._statements import chunks, one_of, starts_with_any
from mlc_core.db.images import current_image
from mlc_core.db.labels import label_tags
from mlc_core.db.model_versions import known_classes
from mlc_core.db.models import Image, ImageTag, ModelVersion
from mlc_core.db.models import ShownTag as ShownTagRow
from mlc_core.db.tag_probes import carries, in_band, seen, version_name
from mlc_core.db.views import current_tags
from mlc_core.errors import UnknownImage, UnknownTag

SOURCES = ("model", "human")


@dataclass(frozen=True)
class ClassBand:
    """Images whose probability of ``tag`` lies in ``[low, high]``: where the model is unsure."""

    tag: str
    low: float
    high: float

    def __post_init__(self) -> None:
        for value in (self.low, self.high):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"a probability is between 0 and 1, got {value:g}")
        if self.low > self.high:
            raise ValueError(f"the band's low end {self.low:g} is above its high end {self.high:g}")


@dataclass(frozen=True)
class TagQuery:
    """What a person asks for.

    Attributes:
        all_tags: the image carries every one of these (at ``min_probability`` or above).
        any_tags: the image carries at least one of these.
        none_tags: the image carries none of these.
        min_probability: the least probability of each ``all_tags`` tag; a tag a person added
            passes whatever the model said (a person's statement is not a guess).
        model_version: ask what this version said (no labels applied); None for what the
            views show.
        uri_prefix: only images whose URI starts with this.
        band: the image's probability of a class lies in a band.
        after_uri: the page after this URI (the last one of the previous page).
        limit: at most this many images.
        source: ``model`` or ``human``: the ``all_tags`` and ``any_tags`` must come from it
            (with none named: the image carries at least one tag from it); None for both.
    """

    all_tags: tuple[str, ...] = ()
    any_tags: tuple[str, ...] = ()
    none_tags: tuple[str, ...] = ()
    min_probability: float | None = None
    model_version: str | None = None
    uri_prefix: str = ""
    band: ClassBand | None = None
    after_uri: str | None = None
    limit: int = 100
    source: str | None = None

    def __post_init__(self) -> None:
        if self.source is not None and self.source not in SOURCES:
            raise ValueError(f"a tag's source is {' or '.join(SOURCES)}, got {self.source!r}")
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")
        if self.min_probability is not None and not 0.0 <= self.min_probability <= 1.0:
            raise ValueError(f"a probability is between 0 and 1, got {self.min_probability:g}")
        both = set(self.none_tags) & (set(self.all_tags) | set(self.any_tags))
        if both:
            raise ValueError(f"{', '.join(sorted(both))} cannot be both wanted and excluded")


@dataclass(frozen=True)
class ShownTag:
    """One tag of an image: its probability under the image's model version (None where the
    version did not tag it, as for a tag only a person added) and who says so."""

    tag: str
    probability: float | None
    source: str


@dataclass(frozen=True)
class FoundImage:
    """An image that matched, with every tag it carries (not only the asked ones)."""

    uri: str
    model_version: str | None
    tags: tuple[ShownTag, ...] = field(default=())


def tag_rows(model_version_id: int | None = None) -> FromClause:
    """``(image_uri, tag, probability, model_version, source, image_id)`` rows: the
    ``current_tags`` view, or one version's own tags of the current images."""
    if model_version_id is None:
        return current_tags
    return (
        select(
            Image.uri.label("image_uri"),
            ImageTag.tag.label("tag"),
            ImageTag.probability.label("probability"),
            ModelVersion.version.label("model_version"),
            literal("model").label("source"),
            Image.id.label("image_id"),
        )
        .join(Image, Image.id == ImageTag.image_id)
        .join(ModelVersion, ModelVersion.id == ImageTag.model_version_id)
        .where(ImageTag.model_version_id == model_version_id, current_image())
        .subquery("version_tags")
    )


def search_tags(
    session: Session, query: TagQuery, *, model_version_id: int | None = None
) -> list[FoundImage]:
    """The images that answer ``query``, in the order mlc first saw them (by key within one
    listing), each with all its tags.

    ``model_version_id`` is the id of ``query.model_version`` (the caller resolved it, with
    a clear error for an unknown version).
    """
    if (query.model_version is None) != (model_version_id is None):
        raise ValueError("give the model version's id exactly when the query names a version")
    after_id = None if query.after_uri is None else _page_start(session, query.after_uri)
    statement = _page_statement(session, query, model_version_id, after_id)
    driver = _rarest_tag(session, query.all_tags, model_version_id)
    if driver is None:
        page = list(session.execute(statement).all())
    else:
        page = _walk_postings(session, statement, query, after_id, driver, model_version_id)
    tags = tags_of_images(session, [image_id for _, _, image_id in page], model_version_id)
    return [FoundImage(uri, version, tuple(tags.get(uri, ()))) for uri, version, _ in page]


# The rarest asked tag drives the walk from its own rows (see _walk_postings): at a million
# images that is faster than walking every image for all tags but the commonest (pairs of
# tags of 2-3 % each: 110 ms walking the images, 40 ms from the rarer tag's rows). Rows are
# counted up to this many to find the rarest (two common tags counted to 20,000 each took
# half of a 50 ms page); 0 walks every image instead.
_POSTINGS_COUNTED_UP_TO = 5_000
_POSTINGS_CHUNK = 2_000


def _postings(model_version_id: int | None) -> tuple[Any, Any]:
    """The ``(tag, image_id)`` columns of the rows a walk from one tag reads: the tags the
    views show, or every version's own tags (a superset of one version's)."""
    if model_version_id is None:
        return ShownTagRow.tag, ShownTagRow.image_id
    return ImageTag.tag, ImageTag.image_id


def _rarest_tag(session: Session, tags: Sequence[str], model_version_id: int | None) -> str | None:
    """The asked tag with the fewest rows (counted up to ``_POSTINGS_COUNTED_UP_TO``, an
    index-only scan of at most that many entries each); None without tags."""
    if _POSTINGS_COUNTED_UP_TO <= 0:
        return None
    tag_column, _ = _postings(model_version_id)
    counted = []
    for tag in sorted(set(tags)):
        capped = select(literal(1)).where(tag_column == tag).limit(_POSTINGS_COUNTED_UP_TO)
        count = session.scalar(select(func.count()).select_from(capped.subquery())) or 0
        counted.append((count, tag))
    return min(counted)[1] if counted else None


def _walk_postings(
    session: Session,
    statement: Select[str, str | None, int],
    query: TagQuery,
    after_id: int | None,
    tag: str,
    model_version_id: int | None,
) -> list[Row[str, str | None, int]]:
    """The page ``statement`` selects, asked only of the images that carry ``tag`` (as the
    views show it, or as some version said), a chunk of ids at a time in id order: for a rare
    tag that is a few thousand candidates however large the collection."""
    tag_column, image_column = _postings(model_version_id)
    start = after_id or 0
    page: list[Row[str, str | None, int]] = []
    while len(page) < query.limit:
        chunk = list(
            session.scalars(
                select(image_column)
                .where(tag_column == tag, image_column > start)
                .order_by(image_column)
                .limit(_POSTINGS_CHUNK)
            )
        )
        last = chunk[-1] if len(chunk) == _POSTINGS_CHUNK else None
        candidates = set(chunk)
        if candidates:
            chunk_statement = statement.where(one_of(session, Image.id, sorted(candidates)))
            page.extend(session.execute(chunk_statement.limit(query.limit - len(page))).all())
        if last is None:
            break
        start = last
    return page


def _page_statement(
    session: Session, query: TagQuery, model_version_id: int | None, after_id: int | None
) -> Select[str, str | None, int]:
    """One walk over the current images in id order after ``after_id``, every filter a probe
    of the image, so the first page costs about (page size / share of images that match)
    index lookups."""
    conditions = [current_image(), seen(model_version_id)]
    for tag in sorted(set(query.all_tags)):
        conditions.append(
            carries([tag], model_version_id, query.min_probability, source=query.source)
        )
    if query.any_tags:
        any_tags = sorted(set(query.any_tags))
        conditions.append(carries(any_tags, model_version_id, source=query.source))
    if query.source is not None and not query.all_tags and not query.any_tags:
        conditions.append(carries(None, model_version_id, source=query.source))
    if query.none_tags:
        conditions.append(~carries(sorted(set(query.none_tags)), model_version_id))
    if query.band is not None:
        conditions.append(in_band(session, query.band, model_version_id))
    if query.uri_prefix:
        conditions.append(starts_with_any(Image.uri, [query.uri_prefix]))
    if after_id is not None:
        conditions.append(Image.id > after_id)
    return (
        select(Image.uri, version_name(model_version_id), Image.id)
        .where(*conditions)
        .order_by(Image.id)
        .limit(query.limit)
    )


def _page_start(session: Session, after_uri: str) -> int:
    """The id the next page starts after: that of the current image at ``after_uri``."""
    image_id = session.scalar(select(Image.id).where(Image.uri == after_uri, current_image()))
    if image_id is None:
        raise UnknownImage(after_uri, [])
    return image_id


def count_tags(
    session: Session,
    *,
    model_version_id: int | None = None,
    uri_prefix: str = "",
    source: str | None = None,
) -> dict[str, int]:
    """How many images carry each tag (as the views show them, or as one version said),
    under ``uri_prefix`` and from ``source``; most frequent first.

    One ``GROUP BY`` over the tag rows: a scan of the tags (2-3 per image), which is why the
    web page keeps the answer for a while instead of asking on every page.
    """
    rows = tag_rows(model_version_id)
    statement = select(rows.c.tag, func.count()).group_by(rows.c.tag)
    if uri_prefix:
        statement = statement.where(starts_with_any(rows.c.image_uri, [uri_prefix]))
    if source is not None:
        statement = statement.where(rows.c.source == source)
    counts = {tag: int(n) for tag, n in session.execute(statement)}
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def tags_of_images(
    session: Session, image_ids: Sequence[int], model_version_id: int | None = None
) -> dict[str, list[ShownTag]]:
    """Every tag of these images by URI (as the views show them, or as one version said), most
    probable first, a person's additions first of all. By id: the view is then probed by its
    images' primary key (12 ms for 1,000 images, against 520 ms by URI on PostgreSQL)."""
    rows = tag_rows(model_version_id)
    found: dict[str, list[ShownTag]] = {}
    for chunk in chunks(list(image_ids), 10_000):
        for uri, tag, probability, source in session.execute(
            select(rows.c.image_uri, rows.c.tag, rows.c.probability, rows.c.source).where(
                one_of(session, rows.c.image_id, chunk)
            )
        ):
            found.setdefault(uri, []).append(
                ShownTag(tag, None if probability is None else float(probability), source)
            )
    for tags in found.values():
        tags.sort(key=lambda t: (t.source != "human", -(t.probability or 0.0), t.tag))
    return found


def known_tags(session: Session) -> set[str]:
    """Every tag a question may name: the classes of any model version and the labelled tags."""
    return known_classes(session) | label_tags(session)


def require_known_tags(session: Session, tags: Sequence[str]) -> None:
    """Raise :class:`~mlc_core.errors.UnknownTag` for the first tag nothing knows, with the
    known tags that look like it."""
    known = known_tags(session)
    for tag in tags:
        if tag not in known:
            close = difflib.get_close_matches(tag, sorted(known), n=5, cutoff=0.6)
            raise UnknownTag(tag, close, sorted(known))
