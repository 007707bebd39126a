"""Image versions: registered once, superseded by a new etag, restored, failed."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mlc_core.db.images import (
    ImageRecord,
    ImageVersion,
    find_image_versions,
    record_failures,
    register_images,
    retire_images,
)
from mlc_core.db.models import Image
from tests.db.support import image


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


def test_an_older_listing_of_a_superseded_version_does_not_bring_it_back(
    migrated_engine: Engine,
) -> None:
    def listed(etag: str, day: int) -> ImageRecord:
        return ImageRecord("s3://b/a.jpg", etag, 100, datetime(2026, 1, day, tzinfo=UTC))

    with Session(migrated_engine) as session, session.begin():
        register_images(session, [listed("e1", 1)])
        register_images(session, [listed("e2", 2)])
        # A discovery that listed before the rewrite registers what it saw, late.
        register_images(session, [listed("e1", 1)])
        current = session.scalars(select(Image.etag).where(Image.superseded_at.is_(None))).all()
        assert current == ["e2"]
        # The same bytes written again later are a restore.
        register_images(session, [listed("e1", 3)])
        current = session.scalars(select(Image.etag).where(Image.superseded_at.is_(None))).all()
    assert current == ["e1"]


def test_retired_versions_leave_current_and_a_listing_that_shows_them_brings_them_back(
    migrated_engine: Engine,
) -> None:
    with Session(migrated_engine) as session, session.begin():
        ids = register_images(session, [image("s3://b/a.jpg"), image("s3://b/b.jpg")])
        assert retire_images(session, list(ids.values())) == 2
        assert find_image_versions(session, list(ids)) == {
            pair: ImageVersion(image_id, current=False) for pair, image_id in ids.items()
        }
        register_images(session, [image("s3://b/a.jpg")])
        versions = find_image_versions(session, list(ids))
    assert [versions[pair].current for pair in sorted(ids)] == [True, False]
