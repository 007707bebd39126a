from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from mlc_core.db.images import ImageRecord, record_failures, register_images
from mlc_core.db.scores import ImageScore, write_scores
from tests.db.support import add_model_version


def register(session: Session, uri: str, etag: str = "e1") -> int:
    return register_images(session, [ImageRecord(uri, etag, 100, None)])[(uri, etag)]


def query(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def test_current_scores_pairs_each_probability_with_its_class(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        champion = add_model_version(session, "v1", champion=True)
        a, b = register(session, "s3://b/a.jpg"), register(session, "s3://b/b.jpg")
        write_scores(
            session,
            champion.id,
            None,
            [
                ImageScore(a, [0.25, 0.5, 0.75], [("dog", 0.5), ("sky", 0.75)]),
                ImageScore(b, [1.0, 0.0, 0.125], [("beach", 1.0)]),
            ],
        )

    rows = query(
        migrated_engine,
        "SELECT image_uri, class_name, probability, model_version FROM current_scores "
        "ORDER BY image_uri, class_name",
    )

    assert rows == [
        ("s3://b/a.jpg", "beach", pytest.approx(0.25), "v1"),
        ("s3://b/a.jpg", "dog", pytest.approx(0.5), "v1"),
        ("s3://b/a.jpg", "sky", pytest.approx(0.75), "v1"),
        ("s3://b/b.jpg", "beach", pytest.approx(1.0), "v1"),
        ("s3://b/b.jpg", "dog", pytest.approx(0.0), "v1"),
        ("s3://b/b.jpg", "sky", pytest.approx(0.125), "v1"),
    ]
    assert all(isinstance(probability, float) for _, _, probability, _ in rows)


def test_current_tags_shows_only_champion_tags_of_current_versions(
    migrated_engine: Engine,
) -> None:
    with Session(migrated_engine) as session, session.begin():
        retired = add_model_version(session, "v1", champion=True)
        old_a = register(session, "s3://b/a.jpg", "e1")
        write_scores(
            session, retired.id, None, [ImageScore(old_a, [0.9, 0.1, 0.1], [("beach", 0.9)])]
        )
        champion = add_model_version(session, "v2", champion=True)
        write_scores(
            session, champion.id, None, [ImageScore(old_a, [0.1, 0.8, 0.1], [("dog", 0.8)])]
        )
        new_a = register(session, "s3://b/a.jpg", "e2")
        b = register(session, "s3://b/b.jpg")
        write_scores(
            session,
            champion.id,
            None,
            [
                ImageScore(new_a, [0.1, 0.1, 0.6], [("sky", 0.6)]),
                ImageScore(b, [0.7, 0.1, 0.1], [("beach", 0.7)]),
            ],
        )

    rows = query(
        migrated_engine,
        "SELECT image_uri, tag, probability, model_version FROM current_tags ORDER BY image_uri",
    )

    assert rows == [
        ("s3://b/a.jpg", "sky", pytest.approx(0.6), "v2"),
        ("s3://b/b.jpg", "beach", pytest.approx(0.7), "v2"),
    ]


def test_scoring_failures_lists_current_failed_images(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        old_a = register(session, "s3://b/a.jpg", "e1")
        b = register(session, "s3://b/b.jpg")
        register(session, "s3://b/c.jpg")
        record_failures(session, [(old_a, "truncated: the file ends early"), (b, "not an image")])
        register(session, "s3://b/a.jpg", "e2")

    rows = query(
        migrated_engine,
        "SELECT image_uri, error, failed_at IS NOT NULL FROM scoring_failures ORDER BY image_uri",
    )

    assert rows == [("s3://b/b.jpg", "not an image", True)]
