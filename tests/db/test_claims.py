"""Claims and the scope of a scoring run: which images are pending, and who holds them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mlc_core.db.claims import claim_images
from mlc_core.db.engine import database_now
from mlc_core.db.images import register_images
from mlc_core.db.pending import ScoringScope, check_score_mode, count_pending_images
from mlc_core.db.runs import start_run
from tests.db.support import add_model_version, image


def _scope(session: Session, model_version_id: int, *prefixes: str) -> ScoringScope:
    return ScoringScope(model_version_id, "new", prefixes, database_now(session))


def test_a_prefix_matches_case_sensitively_on_both_databases(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        champion = add_model_version(session, "v1", champion=True)
        register_images(
            session,
            [image("s3://b/images/cats/1.jpg"), image("s3://b/images/Cats/2.jpg")],
        )
        scope = _scope(session, champion.id, "s3://b/images/cats/")

        assert count_pending_images(session, scope) == 1


def test_a_long_list_of_ids_to_retry_is_walked_a_bounded_list_at_a_time(
    migrated_engine: Engine,
) -> None:
    with Session(migrated_engine) as session, session.begin():
        champion = add_model_version(session, "v1", champion=True)
        ids = register_images(session, [image(f"s3://b/images/{n}.jpg") for n in range(3)])
        run = start_run(session, "score", {})
        scope = _scope(session, champion.id, "s3://b/images/")
        # Far more ids than SQLite binds in one statement (32766): most are not images at all.
        only = [*range(10_000, 50_000), *ids.values()]
        claimed: list[int] = []
        cursor: int | None = 0
        while cursor is not None:
            batch = claim_images(
                session,
                scope,
                run_id=run.id,
                after_id=cursor,
                limit=2,
                live_after=database_now(session) - timedelta(minutes=1),
                only_ids=only,
            )
            claimed += [claimed_image.id for claimed_image in batch.images]
            cursor = batch.last_id

    assert sorted(claimed) == sorted(ids.values())


def test_an_unknown_mode_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="new, stale, all, failed"):
        check_score_mode("everything")
