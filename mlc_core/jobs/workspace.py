"""The database and object store a job works on, opened from the settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mlc_core.db.engine import check_connection, create_db_engine
from mlc_core.db.revision import HEAD_REVISION, stored_revision
from mlc_core.settings import Settings
from mlc_core.storage import ObjectStore, open_store


@dataclass
class Workspace:
    """An opened database engine and object store, with the settings they came from."""

    settings: Settings
    engine: Engine
    store: ObjectStore

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back on error."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()


def open_workspace(settings: Settings, *, check_store: bool = True) -> Workspace:
    """Connect to the database and the store named by ``settings`` and check both.

    An embedded SQLite database is migrated to the current schema on the spot, so a newcomer
    needs no setup; any other database must have been migrated with ``mlc db upgrade`` (schema
    changes on a shared server are an operator's decision).

    Raises:
        DatabaseUnavailable: the database cannot be reached.
        SchemaOutOfDate: a server database is not at the current schema.
        StoreUnavailable: the store cannot be used.
    """
    engine = create_db_engine(settings.resolved_database_url)
    try:
        check_connection(engine)
        if stored_revision(engine) != HEAD_REVISION:
            _migrate_or_refuse(engine)
        store = open_store(settings.resolved_storage_url, s3_reader=settings.scoring.s3_reader)
        if check_store:
            store.check()
    except BaseException:
        engine.dispose()
        raise
    return Workspace(settings=settings, engine=engine, store=store)


def _migrate_or_refuse(engine: Engine) -> None:
    """Migrate an embedded SQLite database; refuse a server database that is not current."""
    from mlc_core.db.migrate import require_current_schema, upgrade_schema

    if engine.dialect.name == "sqlite":
        upgrade_schema(engine)
    else:
        require_current_schema(engine)
