"""Labels: a person's statements about an image, ``tag`` present (positive) or absent.

A label belongs to the image's URI, not to one version of it, and keeps where it came from
(``source``) and when it last changed (``updated_at``).

Functions take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, distinct, func, or_, select
from sqlalchemy.orm import Session

from mlc_core.db._statements import dialect_insert
from mlc_core.db.models import Label, utc_now
from mlc_core.db.shown_tags import refresh_shown_tags_of_uris


@dataclass(frozen=True)
class LabelRecord:
    """A person's statement: ``tag`` is present on the image (``positive``) or absent.

    ``complete``: it came with the image's whole tag set (see :class:`~mlc_core.db.models.Label`);
    False for a correction, which says nothing of the tags it does not name.
    """

    image_uri: str
    tag: str
    positive: bool
    source: str
    complete: bool = True


@dataclass(frozen=True)
class StoredLabel:
    """A label as it is stored, with where it came from and when it last changed."""

    tag: str
    positive: bool
    source: str
    updated_at: datetime
    complete: bool


def upsert_labels(session: Session, labels: Sequence[LabelRecord]) -> int:
    """Insert new labels and update changed ones, keyed by ``(image_uri, tag)``.

    When ``labels`` holds the same ``(image_uri, tag)`` twice, the later one wins. A label that
    is already stored with the same ``positive`` and ``source`` is left untouched, so its
    ``updated_at`` keeps saying when it last changed. An image's whole tag set stays known once
    stated: a correction of a label that came with it keeps ``complete``.

    Returns:
        The number of rows inserted or changed (0 when importing the same labels again).
    """
    latest = {(label.image_uri, label.tag): label for label in labels}
    if not latest:
        return 0
    now = utc_now()
    rows = [
        {
            "image_uri": label.image_uri,
            "tag": label.tag,
            "positive": label.positive,
            "source": label.source,
            "updated_at": now,
            "complete": label.complete,
        }
        for label in latest.values()
    ]
    insert = dialect_insert(session, Label)
    statement = insert.on_conflict_do_update(
        index_elements=["image_uri", "tag"],
        set_={
            "positive": insert.excluded.positive,
            "source": insert.excluded.source,
            "updated_at": insert.excluded.updated_at,
            "complete": or_(Label.complete, insert.excluded.complete),
        },
        where=or_(
            Label.positive != insert.excluded.positive,
            Label.source != insert.excluded.source,
            and_(insert.excluded.complete, ~Label.complete),
        ),
    ).returning(Label.image_uri)
    changed = list(session.scalars(statement, rows).all())
    # Labels win over models in what people see (mlc_core.db.shown_tags).
    refresh_shown_tags_of_uris(session, changed)
    return len(changed)


def labels_by_image(session: Session) -> dict[str, dict[str, bool]]:
    """All labels: image URI -> {tag: positive}."""
    labels: dict[str, dict[str, bool]] = {}
    for image_uri, tag, positive in session.execute(
        select(Label.image_uri, Label.tag, Label.positive).order_by(Label.image_uri, Label.tag)
    ):
        labels.setdefault(image_uri, {})[tag] = positive
    return labels


def count_labelled_images(session: Session, *, changed_after: datetime | None = None) -> int:
    """The number of images with at least one label, or one inserted or changed after a moment.

    Args:
        changed_after: count only images with a label whose ``updated_at`` is later than this
            (a value read from the same database); ``None`` counts every labelled image.
    """
    query = select(func.count(distinct(Label.image_uri)))
    if changed_after is not None:
        query = query.where(Label.updated_at > changed_after)
    return session.scalar(query) or 0


def labels_of(session: Session, image_uri: str) -> list[StoredLabel]:
    """The labels of one image, by tag."""
    return [
        StoredLabel(tag, positive, source, updated_at, complete)
        for tag, positive, source, updated_at, complete in session.execute(
            select(Label.tag, Label.positive, Label.source, Label.updated_at, Label.complete)
            .where(Label.image_uri == image_uri)
            .order_by(Label.tag)
        )
    ]


def clear_labels(session: Session, image_uri: str, tags: Sequence[str] | None = None) -> int:
    """Hand tags of an image back to the model: delete its labels (all, or these tags).

    Returns:
        How many labels were deleted.
    """
    statement = delete(Label).where(Label.image_uri == image_uri)
    if tags is not None:
        statement = statement.where(Label.tag.in_(list(tags)))
    result = session.execute(statement.execution_options(synchronize_session=False))
    cleared = int(getattr(result, "rowcount", 0))
    if cleared:
        refresh_shown_tags_of_uris(session, [image_uri])
    return cleared


def complete_label_uris(session: Session) -> set[str]:
    """The images whose whole tag set a person stated (every class they do not name is
    absent); for the others, classes without a label are unknown."""
    return set(session.scalars(select(Label.image_uri).where(Label.complete).distinct()))


def label_tags(session: Session) -> set[str]:
    """Every tag a label names."""
    return set(session.scalars(select(Label.tag).distinct()))
