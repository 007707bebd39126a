"""The shown version kept on each image row always equals the rule it stands for.

The rule (views version 3, where it was decided in SQL): among the promoted, not rolled-back
versions that scored the image, the one promoted most recently. A random walk of score
writes, score deletions, promotions and rollbacks checks the kept column after every step.
"""

from __future__ import annotations

import random

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mlc_core.db.images import register_images
from mlc_core.db.model_versions import promote_model_version
from mlc_core.db.models import Image, ModelVersion, Score
from mlc_core.db.scores import ImageScore, delete_scores, write_scores
from mlc_core.db.shown import refresh_all_shown_versions
from tests.db.support import add_model_version, image


def _by_the_rule(session: Session) -> dict[int, int | None]:
    versions = {v.id: v for v in session.scalars(select(ModelVersion))}
    scored: dict[int, list[int]] = {}
    for image_id, version_id in session.execute(select(Score.image_id, Score.model_version_id)):
        scored.setdefault(image_id, []).append(version_id)
    expected: dict[int, int | None] = {}
    for image_id in session.scalars(select(Image.id)):
        eligible = [
            versions[v]
            for v in scored.get(image_id, [])
            if versions[v].promoted_at is not None and versions[v].rolled_back_at is None
        ]
        best = max(eligible, key=lambda v: (v.promoted_at, v.id), default=None)
        expected[image_id] = None if best is None else best.id
    return expected


def _kept(session: Session) -> dict[int, int | None]:
    return {i: v for i, v in session.execute(select(Image.id, Image.shown_model_version_id))}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_kept_shown_version_follows_every_write_deletion_and_promotion(
    migrated_engine: Engine, seed: int
) -> None:
    rng = random.Random(seed)
    with Session(migrated_engine) as session, session.begin():
        versions = [add_model_version(session, f"v{n}").id for n in range(1, 5)]
        ids = list(register_images(session, [image(f"s3://b/{n}.jpg") for n in range(8)]).values())
    for _ in range(40):
        with Session(migrated_engine) as session, session.begin():
            version = session.get_one(ModelVersion, rng.choice(versions))
            some = rng.sample(ids, rng.randint(1, 4))
            action = rng.choice(["write", "write", "delete", "promote"])
            if action == "write":
                write_scores(
                    session, version.id, None, [ImageScore(i, (0.9, 0.1, 0.6)) for i in some]
                )
            elif action == "delete":
                delete_scores(session, model_version_id=version.id, image_ids=some)
            else:
                # Promoting an older version than the champion is a rollback.
                promote_model_version(session, version, "test")
        with Session(migrated_engine) as session:
            assert _kept(session) == _by_the_rule(session), action


def test_a_full_refresh_repairs_a_column_someone_changed_by_hand(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        champion = add_model_version(session, "v1", champion=True).id
        ids = list(register_images(session, [image(f"s3://b/{n}.jpg") for n in range(3)]).values())
        write_scores(session, champion, None, [ImageScore(i, (0.9, 0.1, 0.6)) for i in ids])
        session.execute(Image.__table__.update().values(shown_model_version_id=None))
        refresh_all_shown_versions(session)
    with Session(migrated_engine) as session:
        assert set(_kept(session).values()) == {champion}
