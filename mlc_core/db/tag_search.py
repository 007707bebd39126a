"""Which images carry which tags: the questions ``mlc tags``, the export and the web page ask.

By default every answer comes from the ``current_tags`` view (people's labels win over models;
see :mod:`mlc_core.db.views`), so the command line and SQL never disagree. Asked about one
model version, the same query runs over what that version itself said of the current images,
with no labels applied: that is how a person compares versions.

A query is one statement with the filters as ``EXISTS`` subqueries on ``(image_uri, tag)``,
ordered by URI and paged by the last URI seen (keyset), so the first page of a tag that a
million images carry costs an index walk, not a sort.

Functions take a session and never commit.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    exists,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session

from mlc_core.db._statements import chunks, starts_with_any
from mlc_core.db.images import current_image
from mlc_core.db.labels import label_tags
from mlc_core.db.model_versions import known_classes
from mlc_core.db.models import Image, ImageTag, Label, ModelVersion, Score
from mlc_core.db.views import current_scores, current_tags, shown_scores
from mlc_core.errors import UnknownTag

SOURCES = ("model", "human")
# Images looked at in key order for a page of a tag before asking its tag rows instead: a page
# of 100 of a tag one image in 20 carries is found within it.
WALK_WINDOW = 2000


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
    """``(image_uri, tag, probability, model_version, source)`` rows the query reads: the
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
        )
        .join(Image, Image.id == ImageTag.image_id)
        .join(ModelVersion, ModelVersion.id == ImageTag.model_version_id)
        .where(ImageTag.model_version_id == model_version_id, current_image())
        .subquery("version_tags")
    )


def seen_images(model_version_id: int | None = None) -> Select[str, str | None]:
    """``(uri, model version)`` of every image the query can answer with: the current images
    with a shown score or a label (or, for one version, the ones it scored)."""
    if model_version_id is not None:
        return (
            select(Image.uri.label("image_uri"), ModelVersion.version.label("model_version"))
            .join(Score, Score.image_id == Image.id)
            .join(ModelVersion, ModelVersion.id == Score.model_version_id)
            .where(Score.model_version_id == model_version_id, current_image())
        )
    shown_version = (
        select(ModelVersion.version)
        .join(shown_scores, shown_scores.c.model_version_id == ModelVersion.id)
        .where(shown_scores.c.image_id == Image.id)
        .scalar_subquery()
    )
    labelled = (
        select(Label.id)
        .where(Label.image_uri == Image.uri, Label.positive)
        .limit(1)
        .scalar_subquery()
    )
    # Scalar subqueries, not EXISTS: under an OR, PostgreSQL turns an EXISTS into a hash of
    # every shown score, built before the first row (a cost that grows with the collection
    # on every page), where these are checked only on the rows the walk by URI reaches.
    return select(Image.uri.label("image_uri"), shown_version.label("model_version")).where(
        current_image(), or_(shown_version.is_not(None), labelled.is_not(None))
    )


def search_tags(
    session: Session, query: TagQuery, *, model_version_id: int | None = None
) -> list[FoundImage]:
    """The images that answer ``query``, ordered by URI, each with all its tags.

    ``model_version_id`` is the id of ``query.model_version`` (the caller resolved it, with
    a clear error for an unknown version).
    """
    if (query.model_version is None) != (model_version_id is None):
        raise ValueError("give the model version's id exactly when the query names a version")
    band = None if query.band is None else _band_rows(session, query.band, model_version_id)
    page = None
    if (query.all_tags or query.any_tags) and band is None:
        # A common tag fills a page within the next few thousand images in key order, an
        # index walk; a rare one does not, and is cheaper found from its tag rows (few to
        # sort). The walk answers only when it found a whole page: the first matches within
        # the next images in key order are then the first matches of all.
        walk = _page_statement(query, model_version_id, None, window=WALK_WINDOW)
        page = session.execute(walk).all()
        if len(page) < query.limit:
            page = None
    if page is None:
        page = session.execute(_page_statement(query, model_version_id, band)).all()
    tags = shown_tags(session, [uri for uri, _ in page], model_version_id)
    return [FoundImage(uri, version, tuple(tags.get(uri, ()))) for uri, version in page]


def _band_rows(session: Session, band: ClassBand, model_version_id: int | None) -> FromClause:
    """``(image_uri, model_version)`` of the images in the band."""
    if model_version_id is None:
        return (
            select(current_scores.c.image_uri, current_scores.c.model_version)
            .where(
                current_scores.c.class_name == band.tag,
                current_scores.c.probability.between(band.low, band.high),
            )
            .subquery("band")
        )
    version = session.get_one(ModelVersion, model_version_id)
    if band.tag not in version.classes:
        raise UnknownTag(band.tag, [], list(version.classes))
    probability = Score.probabilities[version.classes.index(band.tag)].as_float()
    return (
        select(Image.uri.label("image_uri"), literal(version.version).label("model_version"))
        .join(Score, Score.image_id == Image.id)
        .where(
            Score.model_version_id == model_version_id,
            current_image(),
            probability.between(band.low, band.high),
        )
        .subquery("band")
    )


def _page_statement(
    query: TagQuery,
    model_version_id: int | None,
    band: FromClause | None,
    *,
    window: int | None = None,
) -> Select[str, str | None]:
    """The page's statement; with ``window``, over only the next ``window`` images in key
    order (after ``after_uri``, under ``uri_prefix``), every tag filter a correlated check."""
    rows = tag_rows(model_version_id)
    all_tags, any_tags = sorted(set(query.all_tags)), sorted(set(query.any_tags))
    driver: FromClause
    if window is not None:
        driver = _window(query, model_version_id, window)
        statement = select(driver.c.image_uri, driver.c.model_version)
    elif all_tags:
        driver = rows.alias("driver")
        statement = select(driver.c.image_uri, driver.c.model_version).where(
            driver.c.tag == all_tags[0],
            _probable(driver, query.min_probability),
            _from(driver, query.source),
        )
        all_tags = all_tags[1:]
    elif any_tags:
        driver = rows.alias("driver")
        statement = (
            select(driver.c.image_uri, driver.c.model_version)
            .where(driver.c.tag.in_(any_tags), _from(driver, query.source))
            .distinct()
        )
        any_tags = []
    elif band is not None:
        driver, band = band, None
        statement = select(driver.c.image_uri, driver.c.model_version)
    else:
        driver = seen_images(model_version_id).subquery("driver")
        statement = select(driver.c.image_uri, driver.c.model_version)
    uri = driver.c.image_uri
    if band is not None:
        in_band = band.alias()
        statement = statement.where(exists().where(in_band.c.image_uri == uri))
    for tag in all_tags:
        statement = statement.where(_carries(rows, uri, [tag], query.min_probability, query.source))
    if any_tags:
        statement = statement.where(_carries(rows, uri, any_tags, source=query.source))
    if query.source is not None and not query.all_tags and not query.any_tags:
        from_source = rows.alias("from_source")
        statement = statement.where(
            exists().where(from_source.c.image_uri == uri, from_source.c.source == query.source)
        )
    if query.none_tags:
        statement = statement.where(~_carries(rows, uri, sorted(set(query.none_tags))))
    if query.uri_prefix:
        statement = statement.where(starts_with_any(uri, [query.uri_prefix]))
    if query.after_uri is not None:
        statement = statement.where(uri > query.after_uri)
    return statement.order_by(uri).limit(query.limit)


def _window(query: TagQuery, model_version_id: int | None, size: int) -> FromClause:
    """The next ``size`` images the query can answer with, in key order."""
    seen = seen_images(model_version_id)
    uri = seen.selected_columns.image_uri
    if query.uri_prefix:
        seen = seen.where(starts_with_any(uri, [query.uri_prefix]))
    if query.after_uri is not None:
        seen = seen.where(uri > query.after_uri)
    return seen.order_by(uri).limit(size).subquery("window")


def _probable(rows: FromClause, min_probability: float | None) -> ColumnElement[bool]:
    if min_probability is None:
        return true()
    return or_(rows.c.source == "human", rows.c.probability >= min_probability)


def _from(rows: FromClause, source: str | None) -> ColumnElement[bool]:
    return true() if source is None else rows.c.source == source


def _carries(
    rows: FromClause,
    uri: ColumnElement[str],
    tags: Sequence[str],
    min_probability: float | None = None,
    source: str | None = None,
) -> ColumnElement[bool]:
    """The image at ``uri`` carries one of ``tags`` (at ``min_probability``, from ``source``).

    A scalar subquery, not EXISTS: PostgreSQL plans an EXISTS on the view as a semi join
    that first gathers every row of the tag, where this looks up each image the page reaches.
    """
    other = rows.alias()
    first = (
        select(other.c.tag)
        .where(other.c.image_uri == uri, other.c.tag.in_(list(tags)))
        .where(_probable(other, min_probability), _from(other, source))
        .limit(1)
        .scalar_subquery()
    )
    return first.is_not(None)


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


def shown_tags(
    session: Session, uris: Sequence[str], model_version_id: int | None = None
) -> dict[str, list[ShownTag]]:
    """Every tag of these images (as the views show them, or as one version said), most
    probable first, a person's additions first of all."""
    rows = tag_rows(model_version_id)
    found: dict[str, list[ShownTag]] = {}
    for chunk in chunks(list(uris)):
        for uri, tag, probability, source in session.execute(
            select(rows.c.image_uri, rows.c.tag, rows.c.probability, rows.c.source).where(
                rows.c.image_uri.in_(chunk)
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
