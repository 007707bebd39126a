"""The kept ``shown_tags`` always equal the rule views version 4 decided on each lookup, and
the kept ``tag_changes`` the counts of what changed between every two versions.

A random walk of everything that can change what people see (score writes and deletions,
retags, promotions and rollbacks, labels set and cleared, failures, retirement, a new or a
restored version of an object) compares ``current_tags`` (now read from the kept rows) with
version 4's query after every step, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from mlc_core.db.engine import create_db_engine
from mlc_core.db.images import record_failures, register_images, retire_images
from mlc_core.db.labels import LabelRecord, clear_labels, upsert_labels
from mlc_core.db.migrate import upgrade_schema
from mlc_core.db.model_versions import promote_model_version
from mlc_core.db.models import ModelVersion, ShownTag
from mlc_core.db.scores import ImageScore, delete_scores, replace_tags, write_scores
from mlc_core.db.shown import refresh_all_shown_versions
from mlc_core.db.views import computed_current_tags_sql
from tests.db.support import CLASSES, add_model_version, image

URIS = [f"s3://b/{n}.jpg" for n in range(6)]


def _rows(session: Session, sql: str) -> list[tuple[Any, ...]]:
    return sorted(
        session.execute(
            text(f"SELECT image_id, tag, probability, model_version, source FROM ({sql}) AS t")
        ).all()
    )


def _kept(session: Session) -> list[tuple[Any, ...]]:
    return _rows(session, "SELECT * FROM current_tags")


def _by_the_rule(session: Session) -> list[tuple[Any, ...]]:
    return _rows(session, computed_current_tags_sql())


def _kept_changes(session: Session) -> dict[tuple[int, int, str], tuple[int, int]]:
    rows = session.execute(
        text("SELECT old_version_id, new_version_id, tag, gained, lost FROM tag_changes")
    )
    return {(o, n, t): (g, lost) for o, n, t, g, lost in rows if g or lost}


def _changes_by_the_rule(session: Session) -> dict[tuple[int, int, str], tuple[int, int]]:
    scored: dict[int, set[int]] = {}
    for image_id, version in session.execute(text("SELECT image_id, model_version_id FROM scores")):
        scored.setdefault(image_id, set()).add(version)
    tags: dict[tuple[int, int], set[str]] = {}
    for image_id, version, tag in session.execute(
        text("SELECT image_id, model_version_id, tag FROM image_tags")
    ):
        tags.setdefault((image_id, version), set()).add(tag)
    counts: dict[tuple[int, int, str], list[int]] = {}
    for image_id, versions in scored.items():
        for old in versions:
            for new in versions:
                if old >= new:
                    continue
                before, after = tags.get((image_id, old), set()), tags.get((image_id, new), set())
                for tag in after - before:
                    counts.setdefault((old, new, tag), [0, 0])[0] += 1
                for tag in before - after:
                    counts.setdefault((old, new, tag), [0, 0])[1] += 1
    return {key: (g, lost) for key, (g, lost) in counts.items()}


def _random_score(rng: random.Random, image_id: int) -> ImageScore:
    probabilities = tuple(round(rng.random(), 3) for _ in CLASSES)
    tags = tuple((c, p) for c, p in zip(CLASSES, probabilities, strict=True) if p >= 0.5)
    return ImageScore(image_id, probabilities, tags)


def _image_ids(session: Session) -> list[int]:
    # Every version, not only current ones: a run may write the score of an image that a
    # listing retired or a newer version superseded meanwhile.
    return list(session.scalars(text("SELECT id FROM images")))


def _step(session: Session, rng: random.Random, versions: list[int], action: str) -> None:
    ids = _image_ids(session)
    some = rng.sample(ids, min(len(ids), rng.randint(1, 3)))
    version = session.get_one(ModelVersion, rng.choice(versions))
    uri = rng.choice(URIS)
    if action == "write":
        write_scores(session, version.id, None, [_random_score(rng, i) for i in some])
    elif action == "delete":
        delete_scores(session, model_version_id=version.id, image_ids=some)
    elif action == "retag":
        tags = {i: tuple((c, 0.75) for c in rng.sample(CLASSES, rng.randint(0, 3))) for i in some}
        replace_tags(session, version.id, tags)
    elif action == "promote":
        # Promoting an older version than the champion is a rollback.
        promote_model_version(session, version, "test")
    elif action == "label":
        upsert_labels(
            session,
            [
                LabelRecord(uri, tag, rng.random() < 0.75, "person", complete=False)
                for tag in rng.sample(CLASSES, rng.randint(1, 2))
            ],
        )
    elif action == "clear":
        clear_labels(session, uri, rng.choice([None, [rng.choice(CLASSES)]]))
    elif action == "fail":
        record_failures(session, [(i, "could not decode") for i in some])
    elif action == "retire":
        retire_images(session, some)
    elif action == "new version":
        register_images(session, [image(uri, etag=rng.choice(["e1", "e2", "e3"]))])


ACTIONS = ["write", "write", "write", "delete", "retag", "promote", "label", "label", "label"]
ACTIONS += ["clear", "fail", "retire", "new version", "new version", "new version"]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_kept_tags_follow_every_change_that_decides_them(
    migrated_engine: Engine, seed: int
) -> None:
    rng = random.Random(seed)
    with Session(migrated_engine) as session, session.begin():
        versions = [add_model_version(session, f"v{n}").id for n in range(1, 4)]
        promote_model_version(session, session.get_one(ModelVersion, versions[0]), "test")
        register_images(session, [image(uri) for uri in URIS])
    seen_human = seen_model = False
    for step in range(80):
        action = rng.choice(ACTIONS)
        with Session(migrated_engine) as session, session.begin():
            _step(session, rng, versions, action)
        with Session(migrated_engine) as session:
            kept = _kept(session)
            assert kept == _by_the_rule(session), (step, action)
            assert _kept_changes(session) == _changes_by_the_rule(session), (step, action)
            seen_human |= any(row[4] == "human" for row in kept)
            seen_model |= any(row[4] == "model" for row in kept)
    # The walk reached both kinds of rows (else it proved little).
    assert seen_human and seen_model


def test_a_full_refresh_repairs_rows_someone_changed_by_hand(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        champion = add_model_version(session, "v1", champion=True).id
        ids = list(register_images(session, [image(uri) for uri in URIS[:3]]).values())
        write_scores(
            session,
            champion,
            None,
            [ImageScore(i, (0.9, 0.1, 0.6), (("beach", 0.9),)) for i in ids],
        )
        upsert_labels(session, [LabelRecord(URIS[0], "dog", True, "person", complete=False)])
        expected = _by_the_rule(session)
        session.execute(ShownTag.__table__.delete())
        refresh_all_shown_versions(session)
    with Session(migrated_engine) as session:
        assert _kept(session) == expected
        assert {row[4] for row in expected} == {"model", "human"}


def test_a_label_set_while_a_run_writes_the_same_image_keeps_both(postgres_url: str) -> None:
    # PostgreSQL only: SQLite lets one writer at a time in, so the two cannot overlap there.
    engine = create_db_engine(postgres_url)
    try:
        upgrade_schema(engine)
        with Session(engine) as session, session.begin():
            champion = add_model_version(session, "v1", champion=True).id
            (image_id,) = register_images(session, [image(URIS[0])]).values()
        run = Session(engine)
        run.begin()
        write_scores(
            run, champion, None, [ImageScore(image_id, (0.9, 0.1, 0.2), (("beach", 0.9),))]
        )
        labelled = threading.Event()

        def person_labels() -> None:
            with Session(engine) as session, session.begin():
                upsert_labels(session, [LabelRecord(URIS[0], "dog", True, "person", False)])
            labelled.set()

        person = threading.Thread(target=person_labels)
        person.start()
        # The person's refresh waits for the run's transaction, which holds the image row.
        assert not labelled.wait(1.0)
        run.commit()
        run.close()
        person.join(timeout=30)
        assert labelled.is_set()
        with Session(engine) as session:
            assert _kept(session) == _by_the_rule(session)
            assert {(row[1], row[4]) for row in _kept(session)} == {
                ("beach", "model"),
                ("dog", "human"),
            }
    finally:
        engine.dispose()
