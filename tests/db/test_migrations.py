from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from mlc_core.db.engine import create_db_engine
from mlc_core.db.migrate import (
    alembic_config,
    compared_on,
    head_revision,
    require_current_schema,
    schema_revision,
    upgrade_schema,
)
from mlc_core.db.models import Base
from mlc_core.db.revision import HEAD_REVISION
from mlc_core.db.views import VIEW_NAMES
from mlc_core.errors import SchemaOutOfDate

VIEWS = set(VIEW_NAMES)
# The head of the last release: the schema users have data in.
RELEASED_HEAD = "73a9234e8f88"


def test_migration_history_has_exactly_one_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()

    assert heads == [head_revision()]
    # The fast check every command makes before it would load Alembic.
    assert head_revision() == HEAD_REVISION


def test_every_migration_file_says_why_it_exists() -> None:
    script = ScriptDirectory.from_config(alembic_config())

    for revision in script.walk_revisions():
        assert "Why this revision exists:" in (revision.module.__doc__ or ""), revision.path


def test_upgrade_from_empty_creates_tables_and_views_at_head(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        revision = upgrade_schema(engine)

        assert revision == head_revision()
        assert schema_revision(engine) == head_revision()
        inspector = inspect(engine)
        assert set(Base.metadata.tables) <= set(inspector.get_table_names())
        assert set(inspector.get_view_names()) == VIEWS
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op(migrated_engine: Engine) -> None:
    assert upgrade_schema(migrated_engine) == head_revision()


def test_models_match_migrations(migrated_engine: Engine) -> None:
    with migrated_engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_object": compared_on(connection.dialect.name),
            },
        )
        differences = compare_metadata(context, Base.metadata)

    assert differences == []


def test_downgrade_to_base_then_upgrade_again(migrated_engine: Engine) -> None:
    with migrated_engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")

    assert schema_revision(migrated_engine) is None
    assert set(inspect(migrated_engine).get_table_names()) == {"alembic_version"}
    assert inspect(migrated_engine).get_view_names() == []
    assert upgrade_schema(migrated_engine) == head_revision()


def test_schema_revision_of_an_empty_database_is_none(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        assert schema_revision(engine) is None
    finally:
        engine.dispose()


def test_require_current_schema_on_an_empty_database_asks_for_mlc_db_upgrade(
    database_url: str,
) -> None:
    engine = create_db_engine(database_url)
    try:
        with pytest.raises(SchemaOutOfDate, match="has no mlc tables yet; run `mlc db upgrade`"):
            require_current_schema(engine)
    finally:
        engine.dispose()


def test_require_current_schema_accepts_a_database_at_head(migrated_engine: Engine) -> None:
    require_current_schema(migrated_engine)


def test_require_current_schema_names_both_revisions_of_an_older_database(
    migrated_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A newer mlc would have a later head; pretend this one needs revision "later".
    monkeypatch.setattr("mlc_core.db.migrate.head_revision", lambda: "later")

    with pytest.raises(SchemaOutOfDate) as raised:
        require_current_schema(migrated_engine)

    message = str(raised.value)
    assert f"is at revision {schema_revision(migrated_engine)} but this mlc needs later" in message
    assert "run `mlc db upgrade`" in message


def test_a_database_migrated_by_a_newer_mlc_asks_to_upgrade_mlc(migrated_engine: Engine) -> None:
    with migrated_engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00dfeedbeef'")

    with pytest.raises(SchemaOutOfDate, match="f00dfeedbeef, which this mlc does not know"):
        require_current_schema(migrated_engine)
    with pytest.raises(SchemaOutOfDate, match="upgrade mlc"):
        upgrade_schema(migrated_engine)


def _populate_released_schema(connection: Any) -> None:
    """Images, a champion and a candidate, scores, tags, labels, runs and claims, as the
    released schema held them."""
    statements = [
        "INSERT INTO images (id, uri, etag, size, first_seen_at, status) VALUES "
        "(1, 'file:///s/images/a.jpg', 'e1', 10, '2026-11-30 10:00:00+00', 'scored'), "
        "(2, 'file:///s/images/b.jpg', 'e1', 10, '2026-11-30 10:00:00+00', 'failed')",
        "INSERT INTO model_versions (id, version, status, classes, thresholds, "
        "threshold_overrides, metrics, backbone, image_size, artifact_uri, artifact_sha256, "
        "card_uri, created_at, promoted_at) VALUES "
        "(1, 'v1', 'champion', '[\"cat\", \"dog\"]', '[0.5, 0.5]', '{}', '{}', 'compact_cnn', "
        "32, 'file:///s/models/v1/model.keras', 'x', 'file:///s/models/v1/card.json', "
        "'2026-11-30 09:00:00+00', '2026-11-30 09:00:00+00'), "
        "(2, 'v2', 'candidate', '[\"cat\", \"dog\"]', '[0.5, 0.5]', '{}', '{}', 'compact_cnn', "
        "32, 'file:///s/models/v2/model.keras', 'x', 'file:///s/models/v2/card.json', "
        "'2026-11-30 11:00:00+00', NULL)",
        "INSERT INTO runs (id, kind, status, started_at, parameters, counts) VALUES "
        "(1, 'score', 'succeeded', '2026-11-30 10:00:00+00', '{}', '{}')",
        "INSERT INTO scores (id, image_id, model_version_id, probabilities, scored_at, run_id) "
        "VALUES (1, 1, 1, '[0.9, 0.1]', '2026-11-30 10:00:00+00', 1)",
        "INSERT INTO image_tags (image_id, model_version_id, tag, probability) VALUES "
        "(1, 1, 'cat', 0.9)",
        "INSERT INTO labels (id, image_uri, tag, positive, source, updated_at) VALUES "
        "(1, 'file:///s/images/a.jpg', 'cat', true, 'labels.csv', '2026-11-30 08:00:00+00')",
    ]
    for statement in statements:
        connection.exec_driver_sql(statement)


def test_a_populated_database_of_the_released_schema_upgrades_with_its_rows(
    database_url: str,
) -> None:
    engine = create_db_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), RELEASED_HEAD)
            _populate_released_schema(connection)

        assert upgrade_schema(engine) == head_revision()

        with engine.connect() as connection:
            counts = {
                table: connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
                for table in ("images", "model_versions", "runs", "scores", "image_tags", "labels")
            }
            tags = connection.exec_driver_sql(
                "SELECT image_uri, tag, model_version FROM current_tags"
            ).all()
            failures = connection.exec_driver_sql("SELECT image_uri FROM scoring_failures").all()
            new_columns = connection.exec_driver_sql(
                "SELECT abandoned_claims, retired_at FROM images ORDER BY id"
            ).all()
    finally:
        engine.dispose()
    assert counts == {
        "images": 2,
        "model_versions": 2,
        "runs": 1,
        "scores": 1,
        "image_tags": 1,
        "labels": 1,
    }
    assert [tuple(row) for row in tags] == [("file:///s/images/a.jpg", "cat", "v1")]
    assert [tuple(row) for row in failures] == [("file:///s/images/b.jpg",)]
    assert [tuple(row) for row in new_columns] == [(0, None), (0, None)]
