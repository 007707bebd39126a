"""Scores and tags: written once per image and model version, searched by tag."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mlc_core.db.images import record_failures, register_images
from mlc_core.db.model_versions import (
    get_champion,
)
from mlc_core.db.models import Image, ImageTag, Score
from mlc_core.db.scores import ImageScore, write_scores
from mlc_core.db.tag_search import FoundImage, ShownTag, TagQuery, search_tags
from tests.db.support import CLASSES, add_model_version, image


def test_write_scores_twice_writes_once(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        model_version_id = add_model_version(session, "v1", champion=True).id
        image_id = register_images(session, [image("s3://b/a.jpg")])[("s3://b/a.jpg", "e1")]
    rows = [ImageScore(image_id, [0.9, 0.1, 0.7], [("beach", 0.9), ("sky", 0.7)])]
    with Session(migrated_engine) as session, session.begin():
        first = write_scores(session, model_version_id, None, rows)
    with Session(migrated_engine) as session, session.begin():
        second = write_scores(session, model_version_id, None, rows)
        scores = session.scalars(select(Score.probabilities)).all()
        tags = session.scalars(select(ImageTag.tag).order_by(ImageTag.tag)).all()

    assert (first, second) == (1, 0)
    assert scores == [[0.9, 0.1, 0.7]]
    assert tags == ["beach", "sky"]


def test_write_scores_marks_images_scored_and_clears_their_failure(
    migrated_engine: Engine,
) -> None:
    with Session(migrated_engine) as session, session.begin():
        model_version_id = add_model_version(session, "v1", champion=True).id
        image_id = register_images(session, [image("s3://b/a.jpg")])[("s3://b/a.jpg", "e1")]
        record_failures(session, [(image_id, "truncated: the file ends early")])
    with Session(migrated_engine) as session, session.begin():
        write_scores(session, model_version_id, None, [ImageScore(image_id, [0.1, 0.2, 0.3], [])])
        stored = session.execute(
            select(Image.status, Image.error, Image.failed_at).where(Image.id == image_id)
        ).one()

    assert tuple(stored) == ("scored", None, None)


def score_images(engine: Engine, tags_by_uri: dict[str, list[str]]) -> None:
    """Register the images and score them under a champion with the given tags."""
    with Session(engine) as session, session.begin():
        champion = get_champion(session) or add_model_version(session, "v1", champion=True)
        ids = register_images(session, [image(uri) for uri in tags_by_uri])
        write_scores(
            session,
            champion.id,
            None,
            [
                ImageScore(
                    ids[(uri, "e1")],
                    [0.9 if name in tags else 0.1 for name in CLASSES],
                    [(tag, 0.9) for tag in tags],
                )
                for uri, tags in tags_by_uri.items()
            ],
        )


def model_tags(*pairs: tuple[str, float]) -> tuple[ShownTag, ...]:
    return tuple(ShownTag(tag, p, "model") for tag, p in pairs)


def test_search_tags_requires_all_tags(migrated_engine: Engine) -> None:
    score_images(
        migrated_engine,
        {
            "s3://b/c.jpg": ["beach", "sky"],
            "s3://b/a.jpg": ["beach", "dog", "sky"],
            "s3://b/b.jpg": ["beach"],
        },
    )
    with Session(migrated_engine) as session:
        found = search_tags(session, TagQuery(all_tags=("sky", "beach")))

    # In the order mlc first saw them (c.jpg was registered first), not by name.
    assert found == [
        FoundImage("s3://b/c.jpg", "v1", model_tags(("beach", 0.9), ("sky", 0.9))),
        FoundImage("s3://b/a.jpg", "v1", model_tags(("beach", 0.9), ("dog", 0.9), ("sky", 0.9))),
    ]


def test_search_tags_stops_at_the_limit(migrated_engine: Engine) -> None:
    score_images(migrated_engine, {f"s3://b/{n}.jpg": ["dog"] for n in range(5)})
    with Session(migrated_engine) as session:
        found = search_tags(session, TagQuery(all_tags=("dog",), limit=2))

    assert [tagged.uri for tagged in found] == ["s3://b/0.jpg", "s3://b/1.jpg"]


def test_search_tags_ignores_superseded_versions(migrated_engine: Engine) -> None:
    score_images(migrated_engine, {"s3://b/a.jpg": ["dog"]})
    with Session(migrated_engine) as session, session.begin():
        register_images(session, [image("s3://b/a.jpg", "e2")])
        found = search_tags(session, TagQuery(all_tags=("dog",)))

    assert found == []


def test_search_tags_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TagQuery(limit=0)
