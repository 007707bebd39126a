"""Labels: upserted by (image, tag), read back grouped per image."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mlc_core.db.labels import LabelRecord, labels_by_image, upsert_labels


def test_upsert_labels_inserts_then_updates_only_changed_labels(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        first = upsert_labels(
            session,
            [
                LabelRecord("s3://b/a.jpg", "dog", True, "labels.csv"),
                LabelRecord("s3://b/a.jpg", "sky", False, "labels.csv"),
            ],
        )
    with Session(migrated_engine) as session, session.begin():
        second = upsert_labels(
            session,
            [
                LabelRecord("s3://b/a.jpg", "dog", False, "fix.csv"),
                LabelRecord("s3://b/a.jpg", "sky", False, "labels.csv"),
            ],
        )
        labels = labels_by_image(session)

    assert (first, second) == (2, 1)
    assert labels == {"s3://b/a.jpg": {"dog": False, "sky": False}}


def test_labels_by_image_groups_tags_per_image(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        upsert_labels(
            session,
            [
                LabelRecord("s3://b/a.jpg", "dog", True, "labels.csv"),
                LabelRecord("s3://b/b.jpg", "beach", True, "labels.csv"),
                LabelRecord("s3://b/b.jpg", "dog", False, "labels.csv"),
            ],
        )
        labels = labels_by_image(session)

    assert labels == {
        "s3://b/a.jpg": {"dog": True},
        "s3://b/b.jpg": {"beach": True, "dog": False},
    }
