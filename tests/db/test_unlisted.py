"""Key ranges of a listing are read in byte order, the order stores list keys in, whatever the
database's locale, and from an index."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, text
from sqlalchemy.orm import Session

from mlc_core.db.engine import create_db_engine
from mlc_core.db.images import find_image_versions
from mlc_core.db.migrate import upgrade_schema
from mlc_core.db.models import Image
from mlc_core.db.unlisted import prefix_end, versions_in_range

ROOT = "s3://bucket/images/"
# In byte order; a language's order puts "a" before "B" and "photo-10" after "photo_2".
KEYS_IN_BYTE_ORDER = ["B.jpg", "a.jpg", "photo-10.jpg", "photo_2.jpg", "é.jpg"]
STARTED = datetime(2026, 12, 1, tzinfo=UTC)
# After every key under ROOT in byte order, and not under it.
OUTSIDE = "s3://bucket/imagesX.jpg"


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        ("s3://b/images/", "s3://b/images0"),
        ("s3://b/a\U0010ffff", "s3://b/b"),
        ("s3://b/a\ud7ff", "s3://b/a\ue000"),
        ("\U0010ffff", None),
    ],
    ids=["ascii", "last-code-point", "before-surrogates", "no-end"],
)
def test_the_end_of_a_prefix_is_the_first_string_after_all_that_start_with_it(
    prefix: str, end: str | None
) -> None:
    assert prefix_end(prefix) == end


def _engine_with_keys(url: str, keys: list[str]) -> Engine:
    engine = create_db_engine(url)
    upgrade_schema(engine)
    with Session(engine) as session, session.begin():
        session.execute(
            insert(Image),
            [
                {"uri": uri, "etag": "e", "size": 1, "first_seen_at": STARTED}
                for uri in [*(ROOT + key for key in keys), OUTSIDE]
            ],
        )
    return engine


def _range_keys(engine: Engine, after: str | None, up_to: str) -> list[str]:
    with Session(engine) as session:
        found = versions_in_range(
            session, ROOT, ROOT + after if after else None, ROOT + up_to, STARTED
        )
    return sorted(version.uri.removeprefix(ROOT) for version in found)


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-language-locale"])
def any_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An SQLite file, a PostgreSQL database of the server's locale, one of a language's."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mlc.db'}"
    fixture = "postgres_url" if request.param == "postgresql" else "postgres_locale_url"
    url: str = request.getfixturevalue(fixture)
    return url


def test_a_key_range_holds_the_keys_between_its_ends_in_byte_order(
    any_database_url: str,
) -> None:
    engine = _engine_with_keys(any_database_url, KEYS_IN_BYTE_ORDER)
    try:
        assert _range_keys(engine, None, "a.jpg") == ["B.jpg", "a.jpg"]
        assert _range_keys(engine, "a.jpg", "photo_2.jpg") == ["photo-10.jpg", "photo_2.jpg"]
        assert _range_keys(engine, "photo_2.jpg", "\U0010ffff") == ["é.jpg"]
    finally:
        engine.dispose()


def test_a_key_range_is_read_from_an_index_in_a_database_of_a_language_locale(
    postgres_locale_url: str,
) -> None:
    keys = [f"2026-01-{day:02d}/photo-{number:05d}.jpg" for day in (1, 2) for number in range(5000)]
    engine = _engine_with_keys(postgres_locale_url, keys)
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("SELECT images.id"):
            statements.append((statement, parameters))

    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE images")
        event.listen(engine, "before_cursor_execute", record)
        _range_keys(engine, keys[1000], keys[2000])
        event.remove(engine, "before_cursor_execute", record)
        [(statement, parameters)] = statements
        with engine.connect() as connection:
            plan = connection.exec_driver_sql("EXPLAIN " + statement, parameters).scalars().all()
    finally:
        engine.dispose()
    assert "ix_images_uri_bytes" in "\n".join(plan), plan
    assert not any("Seq Scan" in line for line in plan), plan


def test_a_page_of_keys_is_looked_up_through_the_index_in_any_plan_of_a_table_never_analysed(
    postgres_url: str,
) -> None:
    # Once psycopg prepares a statement it sends often, PostgreSQL plans it once for any
    # values; on a table without statistics an IN list of 1,000 URIs was planned as a scan of
    # every row against every key (4.3 s per page at 180,000 images).
    keys = [f"2026-01-01/photo-{number:05d}.jpg" for number in range(20_000)]
    engine = _engine_with_keys(postgres_url, keys)
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("SELECT images.id"):
            statements.append((statement, parameters))

    try:
        event.listen(engine, "before_cursor_execute", record)
        with Session(engine) as session:
            found = find_image_versions(session, [(ROOT + key, "e") for key in keys[:1000]])
        event.remove(engine, "before_cursor_execute", record)
        [(statement, parameters)] = statements
        # The plan made for any values: the statement prepared by name, planned generically.
        assert len(parameters) == 1, f"{len(parameters)} parameters: not one array of URIs"
        [(name, value)] = parameters.items()
        prepared = statement.replace(f"%({name})s", "$1")
        with engine.connect() as connection:
            connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            connection.exec_driver_sql(f"PREPARE lookup(varchar[]) AS {prepared}")
            # EXPLAIN takes no bound parameters; the test's keys need no quoting in an array.
            array = "{" + ",".join(value) + "}"
            plan = connection.exec_driver_sql(f"EXPLAIN EXECUTE lookup('{array}')").scalars().all()
    finally:
        engine.dispose()
    assert len(found) == 1000
    assert not any("Seq Scan" in line for line in plan), plan


def test_the_byte_order_index_is_only_on_postgresql(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        upgrade_schema(engine)
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                names = connection.execute(text("PRAGMA index_list('images')")).all()
                assert "ix_images_uri_bytes" not in {row[1] for row in names}
            else:
                [definition] = connection.execute(
                    text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_images_uri_bytes'")
                ).scalars()
                assert 'COLLATE "C"' in definition
    finally:
        engine.dispose()
