"""Tag queries against a known fixture: each answer equals the same question asked of the views."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from mlc_core.db import tag_search
from mlc_core.db.images import ImageRecord, register_images
from mlc_core.db.labels import LabelRecord, upsert_labels
from mlc_core.db.scores import ImageScore, write_scores
from mlc_core.db.tag_search import (
    ClassBand,
    ShownTag,
    TagQuery,
    count_tags,
    require_known_tags,
    search_tags,
)
from mlc_core.errors import UnknownTag
from tests.db.support import CLASSES, add_model_version

ROOT = "s3://b/"
# (key, probabilities of beach, dog, sky); every threshold is 0.5.
CHAMPION_SCORES = {
    "a.jpg": (0.9, 0.6, 0.1),
    "b.jpg": (0.7, 0.1, 0.8),
    "c.jpg": (0.1, 0.9, 0.55),
    "d.jpg": (0.2, 0.2, 0.2),
    "sub/e.jpg": (0.95, 0.95, 0.95),
}
CANDIDATE_SCORES = {"a.jpg": (0.1, 0.1, 0.9), "b.jpg": (0.6, 0.2, 0.3)}
# A person removed beach from b, added dog to d, and confirmed sky on c.
LABELS = [("b.jpg", "beach", False), ("d.jpg", "dog", True), ("c.jpg", "sky", True)]


def _scores(ids: dict[str, int], scores: dict[str, tuple[float, ...]]) -> list[ImageScore]:
    return [
        ImageScore(
            ids[key],
            probabilities,
            tuple((c, p) for c, p in zip(CLASSES, probabilities, strict=True) if p >= 0.5),
        )
        for key, probabilities in scores.items()
    ]


@pytest.fixture
def tagged(migrated_engine: Engine) -> Iterator[tuple[Engine, int]]:
    """The fixture above; yields the engine and the candidate's id."""
    with Session(migrated_engine) as session, session.begin():
        champion = add_model_version(session, "v1", champion=True)
        candidate = add_model_version(session, "v2")
        records = [ImageRecord(ROOT + key, "e1", 100, None) for key in CHAMPION_SCORES]
        ids = {uri[len(ROOT) :]: i for (uri, _), i in register_images(session, records).items()}
        write_scores(session, champion.id, None, _scores(ids, CHAMPION_SCORES))
        write_scores(session, candidate.id, None, _scores(ids, CANDIDATE_SCORES))
        upsert_labels(
            session,
            [LabelRecord(ROOT + k, t, p, "test", complete=False) for k, t, p in LABELS],
        )
        candidate_id = candidate.id
    yield migrated_engine, candidate_id


def view_uris(engine: Engine, sql: str) -> list[str]:
    with engine.connect() as connection:
        return [row[0] for row in connection.execute(text(sql))]


def found_uris(engine: Engine, query: TagQuery, model_version_id: int | None = None) -> list[str]:
    with Session(engine) as session:
        return [
            image.uri for image in search_tags(session, query, model_version_id=model_version_id)
        ]


QUESTIONS = [
    (
        TagQuery(all_tags=("beach",)),
        "SELECT DISTINCT image_uri FROM current_tags WHERE tag = 'beach' ORDER BY image_uri",
    ),
    (
        TagQuery(all_tags=("beach", "dog")),
        "SELECT image_uri FROM current_tags WHERE tag IN ('beach', 'dog') "
        "GROUP BY image_uri HAVING COUNT(*) = 2 ORDER BY image_uri",
    ),
    (
        TagQuery(any_tags=("sky", "dog")),
        "SELECT DISTINCT image_uri FROM current_tags WHERE tag IN ('sky', 'dog') "
        "ORDER BY image_uri",
    ),
    (
        TagQuery(all_tags=("dog",), none_tags=("beach",)),
        "SELECT image_uri FROM current_tags WHERE tag = 'dog' AND image_uri NOT IN "
        "(SELECT image_uri FROM current_tags WHERE tag = 'beach') ORDER BY image_uri",
    ),
    (
        TagQuery(none_tags=("beach",)),
        "SELECT DISTINCT image_uri FROM current_scores WHERE image_uri NOT IN "
        "(SELECT image_uri FROM current_tags WHERE tag = 'beach') ORDER BY image_uri",
    ),
    (
        TagQuery(all_tags=("dog",), min_probability=0.7),
        "SELECT image_uri FROM current_tags WHERE tag = 'dog' "
        "AND (probability >= 0.7 OR source = 'human') ORDER BY image_uri",
    ),
    (
        TagQuery(all_tags=("sky",), uri_prefix=ROOT + "sub/"),
        "SELECT image_uri FROM current_tags WHERE tag = 'sky' "
        f"AND image_uri LIKE '{ROOT}sub/%' ORDER BY image_uri",
    ),
    (
        TagQuery(any_tags=("beach", "dog", "sky"), after_uri=ROOT + "b.jpg", limit=2),
        "SELECT DISTINCT image_uri FROM current_tags "
        f"WHERE image_uri > '{ROOT}b.jpg' ORDER BY image_uri LIMIT 2",
    ),
    (
        TagQuery(all_tags=("sky",), source="human"),
        "SELECT image_uri FROM current_tags WHERE tag = 'sky' AND source = 'human' "
        "ORDER BY image_uri",
    ),
    (
        TagQuery(any_tags=("dog", "sky"), source="model"),
        "SELECT DISTINCT image_uri FROM current_tags WHERE tag IN ('dog', 'sky') "
        "AND source = 'model' ORDER BY image_uri",
    ),
    (
        TagQuery(source="human"),
        "SELECT DISTINCT image_uri FROM current_tags WHERE source = 'human' ORDER BY image_uri",
    ),
    (
        TagQuery(band=ClassBand("sky", 0.5, 0.9)),
        "SELECT image_uri FROM current_scores WHERE class_name = 'sky' "
        "AND probability BETWEEN 0.5 AND 0.9 ORDER BY image_uri",
    ),
    (
        TagQuery(all_tags=("dog",), band=ClassBand("beach", 0.0, 0.5)),
        "SELECT image_uri FROM current_scores WHERE class_name = 'beach' AND probability <= 0.5 "
        "AND image_uri IN (SELECT image_uri FROM current_tags WHERE tag = 'dog') "
        "ORDER BY image_uri",
    ),
    (
        TagQuery(all_tags=("dog",), none_tags=("sky",), limit=1),
        "SELECT image_uri FROM current_tags WHERE tag = 'dog' AND image_uri NOT IN "
        "(SELECT image_uri FROM current_tags WHERE tag = 'sky') ORDER BY image_uri LIMIT 1",
    ),
    (
        TagQuery(source="human"),
        "SELECT DISTINCT image_uri FROM current_tags WHERE source = 'human' ORDER BY image_uri",
    ),
    (
        TagQuery(all_tags=("dog",), source="model"),
        "SELECT image_uri FROM current_tags WHERE tag = 'dog' AND source = 'model' "
        "ORDER BY image_uri",
    ),
    (
        TagQuery(any_tags=("dog", "sky"), source="human"),
        "SELECT DISTINCT image_uri FROM current_tags WHERE tag IN ('dog', 'sky') "
        "AND source = 'human' ORDER BY image_uri",
    ),
]


@pytest.mark.parametrize(
    ("question", "sql"),
    QUESTIONS,
    ids=[
        "all",
        "all-two",
        "any",
        "all-none",
        "none",
        "min-prob",
        "prefix",
        "page",
        "source-human",
        "source-model-any",
        "source-only",
        "band",
        "band-all",
        "page-all",
        "source",
        "source-all",
        "source-any",
    ],
)
@pytest.mark.parametrize(
    ("drive_below", "chunk"),
    [(50_000, 2_000), (50_000, 1), (0, 2_000)],
    ids=["as-shipped", "one-id-chunks", "walk-all-images"],
)
def test_each_question_gets_the_views_answer(
    tagged: tuple[Engine, int],
    question: TagQuery,
    sql: str,
    drive_below: int,
    chunk: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both ways of walking (from a rare tag's rows in chunks, or over all images) give the
    views' answer, in id order (here also the order of the keys)."""
    monkeypatch.setattr(tag_search, "_POSTINGS_DRIVE_BELOW", drive_below)
    monkeypatch.setattr(tag_search, "_POSTINGS_CHUNK", chunk)
    engine, _ = tagged
    expected = view_uris(engine, sql)

    assert found_uris(engine, question) == expected
    assert expected  # the fixture answers every question with at least one image


def test_tag_counts_equal_the_views_counts(tagged: tuple[Engine, int]) -> None:
    engine, _ = tagged
    with engine.connect() as connection:
        expected = dict(
            connection.execute(
                text("SELECT tag, COUNT(*) FROM current_tags GROUP BY tag ORDER BY tag")
            ).all()
        )
        human = dict(
            connection.execute(
                text("SELECT tag, COUNT(*) FROM current_tags WHERE source = 'human' GROUP BY tag")
            ).all()
        )
    with Session(engine) as session:
        assert count_tags(session) == expected
        assert count_tags(session, source="human") == human == {"dog": 1, "sky": 1}
        assert count_tags(session, uri_prefix=ROOT + "sub/") == {"beach": 1, "dog": 1, "sky": 1}


def test_labels_win_over_the_model(tagged: tuple[Engine, int]) -> None:
    engine, _ = tagged
    with Session(engine) as session:
        found = {i.uri: i for i in search_tags(session, TagQuery(limit=10))}

    assert [t.tag for t in found[ROOT + "b.jpg"].tags] == ["sky"]  # beach removed by a person
    assert found[ROOT + "d.jpg"].tags == (ShownTag("dog", None, "human"),)
    assert found[ROOT + "c.jpg"].tags == (
        ShownTag("sky", 0.55, "human"),
        ShownTag("dog", 0.9, "model"),
    )
    assert {i.model_version for i in found.values()} == {"v1"}


def test_one_version_answers_with_its_own_tags_and_no_labels(tagged: tuple[Engine, int]) -> None:
    engine, candidate_id = tagged
    with Session(engine) as session:
        found = search_tags(
            session,
            TagQuery(any_tags=("beach", "sky"), model_version="v2"),
            model_version_id=candidate_id,
        )
        band = search_tags(
            session,
            TagQuery(band=ClassBand("beach", 0.5, 1.0), model_version="v2"),
            model_version_id=candidate_id,
        )

    assert [(i.uri, i.model_version, i.tags) for i in found] == [
        (ROOT + "a.jpg", "v2", (ShownTag("sky", 0.9, "model"),)),
        (ROOT + "b.jpg", "v2", (ShownTag("beach", 0.6, "model"),)),  # the label is not applied
    ]
    assert [i.uri for i in band] == [ROOT + "b.jpg"]


def test_bad_questions_say_what_is_wrong(tagged: tuple[Engine, int]) -> None:
    engine, _ = tagged
    with pytest.raises(ValueError, match=r"between 0 and 1, got 1\.5"):
        TagQuery(all_tags=("dog",), min_probability=1.5)
    with pytest.raises(ValueError, match="dog cannot be both wanted and excluded"):
        TagQuery(all_tags=("dog",), none_tags=("dog",))
    with pytest.raises(ValueError, match=r"low end 0\.8 is above its high end 0\.2"):
        ClassBand("dog", 0.8, 0.2)
    with Session(engine) as session, pytest.raises(UnknownTag, match="close matches: beach"):
        require_known_tags(session, ["dog", "beech"])
