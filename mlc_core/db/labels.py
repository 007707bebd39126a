"""Labels: a person's statements about an image, ``tag`` present (positive) or absent.

A label belongs to the image's URI, not to one version of it, and keeps where it came from
(``source``) and when it last changed (``updated_at``).

Functions take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import distinct, func, or_, select
from sqlalchemy.orm import Session

from mlc_core.db._statements import dialect_insert
from mlc_core.db.models import Label, utc_now


@dataclass(frozen=True)
class LabelRecord:
    """A ground-truth statement: ``tag`` is present on the image (``positive``) or absent."""

    image_uri: str
    tag: str
    positive: bool
    source: str


def upsert_labels(session: Session, labels: Sequence[LabelRecord]) -> int:
    """Insert new labels and update changed ones, keyed by ``(image_uri, tag)``.

    When ``labels`` holds the same ``(image_uri, tag)`` twice, the later one wins. A label that
    is already stored with the same ``positive`` and ``source`` is left untouched, so its
    ``updated_at`` keeps saying when it last changed.

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
        },
        where=or_(
            Label.positive != insert.excluded.positive, Label.source != insert.excluded.source
        ),
    ).returning(Label.id)
    return len(session.execute(statement, rows).all())


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
