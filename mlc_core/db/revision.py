"""The schema revision this mlc needs, and the one a database is at, without loading Alembic.

Every command opens a workspace, and loading Alembic to compare two strings costs more than half
a second of a command like ``mlc tags``; when the revisions match, nothing else is needed.
A test keeps ``HEAD_REVISION`` equal to the head of the migration history.
"""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

HEAD_REVISION = "8c1d4e7a9b25"


def stored_revision(engine: Engine) -> str | None:
    """The revision in the database's ``alembic_version`` table, or None when it has none
    (or the table cannot be read: the slow path then says why)."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None
