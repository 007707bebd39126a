"""Queries that tell whether retraining is worth it: labels that changed since the last training."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from mlc_core.db.models import Label, Run


def last_training_started_at(session: Session) -> datetime | None:
    """When the most recent successful training run started, or ``None`` if none succeeded.

    A training run reads the labels as they are when it starts, so labels changed after this
    moment are the ones no model version has seen.
    """
    return session.scalar(
        select(func.max(Run.started_at)).where(Run.kind == "train", Run.status == "succeeded")
    )


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
