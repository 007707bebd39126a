from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from mlc_core.db.engine import check_connection, create_db_engine
from mlc_core.errors import DatabaseError, DatabaseUnavailable


def test_check_connection_to_an_unreachable_server_hides_the_password() -> None:
    # Port 1 on the loopback interface: nothing listens there, so the refusal is immediate.
    engine = create_db_engine("postgresql+psycopg://mlc:s3cret-pw@127.0.0.1:1/mlc")

    with pytest.raises(DatabaseUnavailable) as raised:
        check_connection(engine)

    message = str(raised.value)
    assert message.startswith(
        "cannot connect to the database at postgresql+psycopg://mlc:***@127.0.0.1:1/mlc: "
    )
    assert "refused" in message
    assert "s3cret-pw" not in message


def test_check_connection_accepts_a_reachable_database(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        check_connection(engine)
    finally:
        engine.dispose()


def test_an_unsupported_database_is_refused_by_name() -> None:
    with pytest.raises(DatabaseError, match="mlc supports SQLite and PostgreSQL"):
        create_db_engine("mysql://user:pw@localhost/mlc")


def test_sqlite_engine_creates_the_folder_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "mlc.db"

    engine = create_db_engine(f"sqlite:///{path}")
    try:
        check_connection(engine)
    finally:
        engine.dispose()

    assert path.is_file()


def test_sqlite_connections_enforce_foreign_keys_and_use_wal(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'mlc.db'}")
    try:
        with engine.connect() as connection:
            foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
            journal_mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
            busy_timeout = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    finally:
        engine.dispose()

    assert (foreign_keys, journal_mode, busy_timeout) == (1, "wal", 30_000)


def test_an_sqlite_writer_waits_for_another_writer_instead_of_failing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mlc.db'}"
    first, second = create_db_engine(url), create_db_engine(url)
    with first.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE counter (n INTEGER)")
    errors: list[BaseException] = []

    def write_from_second_engine() -> None:
        try:
            with second.begin() as connection:
                connection.exec_driver_sql("INSERT INTO counter VALUES (2)")
        except BaseException as error:
            errors.append(error)

    try:
        with first.begin() as connection:
            connection.exec_driver_sql("INSERT INTO counter VALUES (1)")
            writer = threading.Thread(target=write_from_second_engine)
            writer.start()
            # The second writer is now queued behind this open transaction.
            writer.join(timeout=0.5)
        writer.join()
        with first.connect() as connection:
            rows = connection.execute(text("SELECT n FROM counter ORDER BY n")).scalars().all()
    finally:
        first.dispose()
        second.dispose()

    assert errors == []
    assert rows == [1, 2]
