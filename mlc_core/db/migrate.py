"""The database schema: Alembic migrations, driven from code.

There is one migration history (``mlc_core/db/migrations/versions``) for SQLite and PostgreSQL.
Migrations run on a connection of mlc's own engine (passed to Alembic through
``config.attributes``), so they get the same SQLite pragmas as everything else and never depend
on the current working directory or an ``alembic.ini``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine

from mlc_core.db.engine import check_connection, display_url
from mlc_core.errors import SchemaOutOfDate

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant shared by every mlc process: concurrent `mlc db upgrade` runs on PostgreSQL
# take this transaction-scoped advisory lock, so the second waits and then finds nothing to do.
_POSTGRESQL_MIGRATION_LOCK = 0x6D6C63  # "mlc"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for mlc's migrations, independent of the working directory.

    Args:
        connection: when given, migrations run on it, inside its current transaction.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def compared_on(dialect: str) -> Callable[..., bool]:
    """Autogenerate's ``include_object`` hook for a database of ``dialect``: it leaves out the
    schema items the models mark as another dialect's only (``info["dialect"]``, with the
    matching ``ddl_if``), which the migrations create only there."""

    def include(
        item: object, name: str | None, kind: str, reflected: bool, compare_to: object
    ) -> bool:
        only_on = getattr(item, "info", {}).get("dialect")
        return only_on is None or only_on == dialect

    return include


def head_revision() -> str:
    """The revision this version of mlc needs: the single head of the migration history."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or "base"


def schema_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` when it has no mlc tables yet."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_schema(engine: Engine) -> str:
    """Apply every migration the database lacks, in one transaction, and return the revision.

    Safe to run again (nothing to do) and from two processes at once (the second waits).

    Raises:
        DatabaseUnavailable: the database cannot be reached.
        SchemaOutOfDate: the database is at a revision this mlc does not know (a newer mlc
            migrated it).
    """
    check_connection(engine)
    _refuse_unknown_revision(engine)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(
                f"SELECT pg_advisory_xact_lock({_POSTGRESQL_MIGRATION_LOCK})"
            )
        try:
            command.upgrade(alembic_config(connection), "head")
        except CommandError as error:
            raise SchemaOutOfDate(
                f"cannot upgrade the database at {display_url(engine)}: {error}"
            ) from error
    return head_revision()


def require_current_schema(engine: Engine) -> None:
    """Make sure the database is at the revision this mlc needs before anything uses it.

    Raises:
        DatabaseUnavailable: the database cannot be reached.
        SchemaOutOfDate: the database has no mlc tables yet, is at an older revision (run
            ``mlc db upgrade``) or at a revision this mlc does not know.
    """
    check_connection(engine)
    _refuse_unknown_revision(engine)
    current = schema_revision(engine)
    head = head_revision()
    if current is None:
        raise SchemaOutOfDate(
            f"the database at {display_url(engine)} has no mlc tables yet; run `mlc db upgrade`"
        )
    if current != head:
        raise SchemaOutOfDate(
            f"the database at {display_url(engine)} is at revision {current} but this mlc needs "
            f"{head}; run `mlc db upgrade`"
        )


def _refuse_unknown_revision(engine: Engine) -> None:
    current = schema_revision(engine)
    if current is None:
        return
    script = ScriptDirectory.from_config(alembic_config())
    try:
        script.get_revision(current)
    except CommandError:
        raise SchemaOutOfDate(
            f"the database at {display_url(engine)} is at revision {current}, which this mlc "
            f"does not know (its newest is {head_revision()}); a newer mlc migrated it, so "
            "upgrade mlc"
        ) from None
