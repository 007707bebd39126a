from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mlc_core.db.model_versions import (
    create_model_version,
    get_champion,
    get_model_version,
    list_model_versions,
    next_version_name,
    promote_model_version,
    set_decision,
)
from mlc_core.db.models import Image, ImageTag, ModelVersion, Run, Score
from mlc_core.db.queries import (
    ImageRecord,
    LabelRecord,
    ScoreRecord,
    TaggedImage,
    find_images_with_tags,
    labels_by_image,
    record_failures,
    register_images,
    upsert_labels,
    write_scores,
)
from mlc_core.db.runs import finish_run, start_run

CLASSES = ["beach", "dog", "sky"]


def add_model_version(session: Session, version: str, *, champion: bool = False) -> ModelVersion:
    model_version = create_model_version(
        session,
        version=version,
        classes=CLASSES,
        thresholds=[0.5, 0.5, 0.5],
        metrics={"micro_f1": 0.8},
        backbone="compact_cnn",
        image_size=64,
        artifact_uri=f"models/{version}/model.keras",
        artifact_sha256="0" * 64,
        card_uri=f"models/{version}/card.json",
    )
    if champion:
        promote_model_version(session, model_version, "first model")
    return model_version


def image(uri: str, etag: str = "e1") -> ImageRecord:
    return ImageRecord(uri=uri, etag=etag, size=100, modified_at=datetime(2026, 1, 1, tzinfo=UTC))


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


def test_register_images_twice_returns_the_same_ids(migrated_engine: Engine) -> None:
    records = [image("s3://b/a.jpg"), image("s3://b/b.jpg")]
    with Session(migrated_engine) as session, session.begin():
        first = register_images(session, records)
    with Session(migrated_engine) as session, session.begin():
        second = register_images(session, records)
        rows = session.scalar(select(Image.id).where(Image.uri == "s3://b/a.jpg").limit(2))

    assert first == second
    assert set(first) == {("s3://b/a.jpg", "e1"), ("s3://b/b.jpg", "e1")}
    assert rows == first[("s3://b/a.jpg", "e1")]


def test_register_images_supersedes_older_etags_of_the_same_uri(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        old = register_images(session, [image("s3://b/a.jpg", "e1")])[("s3://b/a.jpg", "e1")]
    with Session(migrated_engine) as session, session.begin():
        new = register_images(session, [image("s3://b/a.jpg", "e2")])[("s3://b/a.jpg", "e2")]
        superseded = {
            image_id: at for image_id, at in session.execute(select(Image.id, Image.superseded_at))
        }

    assert new != old
    assert superseded[old] is not None
    assert superseded[new] is None


def test_register_images_makes_a_restored_version_current_again(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        first = register_images(session, [image("s3://b/a.jpg", "e1")])[("s3://b/a.jpg", "e1")]
    with Session(migrated_engine) as session, session.begin():
        second = register_images(session, [image("s3://b/a.jpg", "e2")])[("s3://b/a.jpg", "e2")]
    with Session(migrated_engine) as session, session.begin():
        register_images(session, [image("s3://b/a.jpg", "e1")])
        current = session.scalars(select(Image.id).where(Image.superseded_at.is_(None))).all()

    assert current == [first]
    assert second != first


def test_write_scores_twice_writes_once(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        model_version_id = add_model_version(session, "v1", champion=True).id
        image_id = register_images(session, [image("s3://b/a.jpg")])[("s3://b/a.jpg", "e1")]
    rows = [ScoreRecord(image_id, [0.9, 0.1, 0.7], [("beach", 0.9), ("sky", 0.7)])]
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
        write_scores(session, model_version_id, None, [ScoreRecord(image_id, [0.1, 0.2, 0.3], [])])
        stored = session.execute(
            select(Image.status, Image.error, Image.failed_at).where(Image.id == image_id)
        ).one()

    assert tuple(stored) == ("scored", None, None)


def test_record_failures_marks_images_failed_with_the_reason(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        ids = register_images(session, [image("s3://b/a.jpg"), image("s3://b/b.jpg")])
        failed_id = ids[("s3://b/a.jpg", "e1")]
        record_failures(session, [(failed_id, "not an image: unknown format")])
    with Session(migrated_engine) as session:
        stored = {
            uri: (status, error, failed_at is not None)
            for uri, status, error, failed_at in session.execute(
                select(Image.uri, Image.status, Image.error, Image.failed_at)
            )
        }

    assert stored == {
        "s3://b/a.jpg": ("failed", "not an image: unknown format", True),
        "s3://b/b.jpg": ("new", None, False),
    }


def test_next_version_name_counts_up_from_the_highest_version(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        assert next_version_name(session) == "v1"
        add_model_version(session, "v1")
        add_model_version(session, "v7")

        assert next_version_name(session) == "v8"


def test_a_new_model_version_is_a_candidate(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        add_model_version(session, "v1")
    with Session(migrated_engine) as session:
        stored = get_model_version(session, "v1")

        assert stored is not None
        assert (stored.status, stored.classes, stored.thresholds) == (
            "candidate",
            CLASSES,
            [0.5, 0.5, 0.5],
        )
        assert get_champion(session) is None
        assert get_model_version(session, "v2") is None


def test_promote_retires_the_previous_champion(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        add_model_version(session, "v1", champion=True)
        candidate = add_model_version(session, "v2")
    with Session(migrated_engine) as session, session.begin():
        promote_model_version(session, candidate, "better micro F1")
    with Session(migrated_engine) as session:
        statuses = {mv.version: mv.status for mv in list_model_versions(session)}
        champion = get_champion(session)

    assert statuses == {"v1": "retired", "v2": "champion"}
    assert champion is not None
    assert (champion.version, champion.decision) == ("v2", "better micro F1")
    assert champion.promoted_at is not None


def test_the_database_refuses_a_second_champion(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        add_model_version(session, "v1", champion=True)
        add_model_version(session, "v2")
    with Session(migrated_engine) as session, pytest.raises(IntegrityError), session.begin():
        second = session.scalars(select(ModelVersion).where(ModelVersion.version == "v2")).one()
        second.status = "champion"
        session.flush()


def test_set_decision_records_why_a_candidate_stayed_one(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        candidate = add_model_version(session, "v1")
    with Session(migrated_engine) as session, session.begin():
        set_decision(session, candidate, "micro F1 0.71 is below the champion's 0.80")
    with Session(migrated_engine) as session:
        stored = get_model_version(session, "v1")

        assert stored is not None
        assert (stored.status, stored.decision) == (
            "candidate",
            "micro F1 0.71 is below the champion's 0.80",
        )


def test_list_model_versions_puts_the_newest_first(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        for version in ("v1", "v2", "v3"):
            add_model_version(session, version)
    with Session(migrated_engine) as session:
        versions = [mv.version for mv in list_model_versions(session)]

    assert versions == ["v3", "v2", "v1"]


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
                ScoreRecord(
                    ids[(uri, "e1")],
                    [0.9 if name in tags else 0.1 for name in CLASSES],
                    [(tag, 0.9) for tag in tags],
                )
                for uri, tags in tags_by_uri.items()
            ],
        )


def test_find_images_with_tags_requires_all_tags(migrated_engine: Engine) -> None:
    score_images(
        migrated_engine,
        {
            "s3://b/c.jpg": ["beach", "sky"],
            "s3://b/a.jpg": ["beach", "dog", "sky"],
            "s3://b/b.jpg": ["beach"],
        },
    )
    with Session(migrated_engine) as session:
        found = find_images_with_tags(session, ["sky", "beach"])

    assert found == [
        TaggedImage("s3://b/a.jpg", {"beach": 0.9, "dog": 0.9, "sky": 0.9}, "v1"),
        TaggedImage("s3://b/c.jpg", {"beach": 0.9, "sky": 0.9}, "v1"),
    ]


def test_find_images_with_tags_stops_at_the_limit(migrated_engine: Engine) -> None:
    score_images(migrated_engine, {f"s3://b/{n}.jpg": ["dog"] for n in range(5)})
    with Session(migrated_engine) as session:
        found = find_images_with_tags(session, ["dog"], limit=2)

    assert [tagged.uri for tagged in found] == ["s3://b/0.jpg", "s3://b/1.jpg"]


def test_find_images_with_tags_ignores_superseded_versions(migrated_engine: Engine) -> None:
    score_images(migrated_engine, {"s3://b/a.jpg": ["dog"]})
    with Session(migrated_engine) as session, session.begin():
        register_images(session, [image("s3://b/a.jpg", "e2")])
        found = find_images_with_tags(session, ["dog"])

    assert found == []


def test_find_images_with_no_tags_is_refused(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, pytest.raises(ValueError, match="at least one tag"):
        find_images_with_tags(session, [])


def test_finish_run_records_status_counts_and_model_version(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        model_version_id = add_model_version(session, "v1").id
        run = start_run(session, "score", {"mode": "new"})
    # The run object comes from a session that is closed by now, as in a real job.
    with Session(migrated_engine) as session, session.begin():
        finish_run(
            session,
            run,
            status="succeeded",
            counts={"scored": 3},
            model_version_id=model_version_id,
        )
    with Session(migrated_engine) as session:
        stored = session.scalars(select(Run)).one()

        assert (stored.kind, stored.status, stored.parameters, stored.counts) == (
            "score",
            "succeeded",
            {"mode": "new"},
            {"scored": 3},
        )
        assert stored.model_version_id == model_version_id
        assert stored.finished_at is not None


def test_start_run_refuses_an_unknown_kind(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, pytest.raises(ValueError, match="unknown run kind"):
        start_run(session, "dance", {})
