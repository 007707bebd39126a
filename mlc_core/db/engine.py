"""Engines for the two databases mlc supports: SQLite (embedded default) and PostgreSQL.

:func:`create_db_engine` only configures; the first connection is made by whoever uses the
engine, and :func:`check_connection` turns "cannot connect" into one readable sentence.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from mlc_core.errors import DatabaseError, DatabaseUnavailable, redact_password

SUPPORTED_BACKENDS = ("sqlite", "postgresql")
# Several processes may write to one SQLite file (a rerun after a crash, two concurrent runs):
# a writer waits this long for the lock instead of failing at once with "database is locked".
SQLITE_BUSY_TIMEOUT_SECONDS = 30
POSTGRESQL_CONNECT_TIMEOUT_SECONDS = 5


def create_db_engine(url: str) -> Engine:
    """Create an engine for ``url`` without connecting.

    SQLite: the parent folder of the file is created; every connection enforces foreign keys,
    uses the WAL journal, compares ``LIKE`` case-sensitively (as PostgreSQL does), waits up
    to 30 s for another writer, and starts each transaction with ``BEGIN IMMEDIATE`` so
    concurrent writers queue instead of failing mid-transaction.
    PostgreSQL (psycopg 3): connections are checked before use (``pool_pre_ping``) and give
    up after 5 s when the server does not answer.

    Args:
        url: a SQLAlchemy URL, e.g. ``sqlite:////var/mlc/mlc.db`` or
            ``postgresql+psycopg://user@host:5432/mlc``.

    Raises:
        DatabaseError: the URL cannot be parsed or names a database mlc does not support.
        DatabaseUnavailable: the folder for an SQLite file cannot be created.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(
            f"cannot parse the database URL {redact_password(url)!r}; expected e.g. "
            "sqlite:///path/mlc.db or postgresql+psycopg://user@host:5432/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _create_sqlite_engine(parsed)
    if backend == "postgresql":
        return create_engine(
            parsed,
            pool_pre_ping=True,
            connect_args={
                "connect_timeout": POSTGRESQL_CONNECT_TIMEOUT_SECONDS,
                # A tag lookup walks images until its page is full, so the planner's cost
                # (of walking all of them) is huge and PostgreSQL compiles it with JIT: 267 ms
                # of compiling for 4 ms of work at a million images. mlc's statements are short.
                "options": "-c jit=off",
            },
        )
    raise DatabaseError(
        f"mlc supports SQLite and PostgreSQL but the database URL "
        f"{parsed.render_as_string(hide_password=True)} is {backend}; use sqlite:///path/mlc.db "
        "or postgresql+psycopg://user@host:5432/dbname"
    )


def _create_sqlite_engine(url: URL) -> Engine:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        folder = Path(database).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DatabaseUnavailable(
                f"cannot create the folder {folder} for the SQLite database at "
                f"{url.render_as_string(hide_password=True)}: {error.strerror or error}"
            ) from error
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_immediate)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _connection_record: Any) -> None:
    # Take transaction control away from the sqlite3 module (its legacy mode starts no
    # transaction for SELECT or DDL); SQLAlchemy's "begin" event emits BEGIN instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
        # As on PostgreSQL: the prefix images/cats/ must not also match images/Cats/.
        cursor.execute("PRAGMA case_sensitive_like = ON")
    finally:
        cursor.close()


def _begin_sqlite_immediate(connection: Connection) -> None:
    # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
    # another process committed in between; IMMEDIATE takes the write lock up front, waiting
    # for it under busy_timeout.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def check_connection(engine: Engine) -> None:
    """Connect once, so a bad URL or an unreachable server fails early and readably.

    Raises:
        DatabaseUnavailable: the database cannot be reached; the message names the URL with
            its password hidden and the driver's reason.
    """
    try:
        # Connecting is the check (the pool pings PostgreSQL; SQLite opens the file and sets its
        # pragmas); running a statement would begin a transaction that queues behind writers.
        with engine.connect():
            pass
    except DBAPIError as error:
        raise DatabaseUnavailable(
            f"cannot connect to the database at {display_url(engine)}: {_short_reason(error)}"
        ) from error


def display_url(engine: Engine) -> str:
    """The engine's URL as it may be shown to people: the password replaced by ``***``."""
    return engine.url.render_as_string(hide_password=True)


def _short_reason(error: DBAPIError) -> str:
    # Drivers wrap the reason in context ("connection failed: connection to server at ...
    # failed: FATAL:  password authentication failed ..."); people need the last clause of the
    # first line.
    message = str(error.orig or error).strip()
    first_line = message.splitlines()[0] if message else "unknown error"
    reason = first_line.rsplit(": ", 1)[-1].strip()
    return reason[:1].lower() + reason[1:] if reason else first_line


def database_failure(engine: Engine, error: DBAPIError) -> DatabaseError:
    """Turn a driver error met mid-run into one sentence a user can act on."""
    message = str(error.orig or error).strip()
    reason = message.splitlines()[0] if message else type(error).__name__
    where = display_url(engine)
    if isinstance(error, OperationalError | InterfaceError):
        return DatabaseUnavailable(
            f"lost the database at {where} ({reason}); every committed batch is kept, so "
            "rerun once it is reachable again"
        )
    return DatabaseError(f"the database at {where} refused a statement: {reason}")


def database_now(session: Session) -> datetime:
    """The database's clock, for heartbeats and leases that several machines compare.

    Every client compares its runs' heartbeats against the same clock, so a worker whose own
    clock runs ahead cannot declare live runs dead. SQLite lives on one machine, whose clock
    every client shares.
    """
    if session.get_bind().dialect.name == "postgresql":
        now = session.scalar(select(func.statement_timestamp()))
        if now is not None:
            return now.astimezone(UTC)
    return datetime.now(UTC)
