"""What a listing did not show: the registered images in the key ranges its pages covered.

A listing streams keys in ascending byte order (S3's order), so each page covers a range of
keys: after the last key shown before it, up to its own last key. The current images
registered in that range that the page did not show are gone from the store, unless a later
page shows them after all (a store that does not list in byte order: SeaweedFS lists "a/x"
before "a-b"). Discovery marks the ones a page missed with the listing's start
(``images.unlisted_at``), clears the mark of a key a later page shows, and once the listing is
complete retires the marked ones and those after the last key shown. No row is written for an
image the listing showed, so a nightly listing with nothing gone writes nothing.

Keys are compared in byte order: on PostgreSQL ``COLLATE "C"``, which the index
``ix_images_uri_bytes`` serves whatever the database's locale; on SQLite the default BINARY
collation, which the index on ``uri`` serves.

Functions take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select, true, update
from sqlalchemy.orm import Session

from mlc_core.db._statements import chunks, one_of
from mlc_core.db.engine import database_now
from mlc_core.db.images import current_image
from mlc_core.db.models import Image
from mlc_core.db.shown_tags import refresh_shown_tags

# The highest code point; a prefix ending in it has no successor of the same length.
_LAST_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


@dataclass(frozen=True)
class RangeVersion:
    """A registered version in a listed key range.

    Attributes:
        known_before: registered before the listing started (a version registered since
            cannot be judged by it).
    """

    id: int
    uri: str
    etag: str
    current: bool
    known_before: bool


def _uri_bytes(session: Session) -> ColumnElement[str]:
    """``images.uri`` compared in byte order, as the listing sorts."""
    if session.get_bind().dialect.name == "postgresql":
        return Image.uri.collate("C")
    return Image.uri.expression


def prefix_end(uri_prefix: str) -> str | None:
    """The first string in byte order after every string starting with ``uri_prefix`` (None:
    there is none, every later string starts with it)."""
    head = uri_prefix
    while head:
        following = ord(head[-1]) + 1
        if following in _SURROGATES:
            following = _SURROGATES.stop
        if following <= _LAST_CODE_POINT:
            return head[:-1] + chr(following)
        # Every string after head[:-1] + U+10FFFF that starts with head[:-1] starts with head.
        head = head[:-1]
    return None


def _in_prefix(
    session: Session, uri_prefix: str, after: str | None = None, up_to: str | None = None
) -> ColumnElement[bool]:
    """Under ``uri_prefix``, after ``after`` and not after ``up_to`` (None: no such bound).

    One bound at each end: SQLite's index range takes the first lower and upper bounds it is
    given, not the tighter ones, so with the prefix's bounds too each page would read the
    prefix from its start (40 ms a page at 200,000 rows instead of 0.04).
    """
    uri = _uri_bytes(session)
    lower = uri > after if after is not None and after >= uri_prefix else uri >= uri_prefix
    end = prefix_end(uri_prefix)
    if up_to is not None and (end is None or up_to < end):
        return and_(lower, uri <= up_to)
    return and_(lower, uri < end if end is not None else true())


def versions_in_range(
    session: Session, uri_prefix: str, after: str | None, up_to: str, listing_start: datetime
) -> list[RangeVersion]:
    """Every registered version under ``uri_prefix`` whose URI sorts after ``after`` (from the
    prefix on when None) and not after ``up_to``: one range scan of the URI index."""
    rows = session.execute(
        select(
            Image.id,
            Image.uri,
            Image.etag,
            current_image(),
            Image.first_seen_at < listing_start,
        ).where(_in_prefix(session, uri_prefix, after, up_to))
    )
    return [
        RangeVersion(image_id, uri_, etag, bool(current), bool(known_before))
        for image_id, uri_, etag, current, known_before in rows
    ]


def mark_unlisted(session: Session, image_ids: Sequence[int], listing_start: datetime) -> None:
    """Record that the listing started at ``listing_start`` did not show these versions in
    the range it covered."""
    for chunk in chunks(list(image_ids)):
        session.execute(
            update(Image)
            .where(Image.id.in_(chunk))
            .values(unlisted_at=listing_start)
            .execution_options(synchronize_session=False)
        )


def clear_unlisted(session: Session, uris: Sequence[str], listing_start: datetime) -> None:
    """Take back the marks the listing started at ``listing_start`` put on these URIs: a later
    page showed them (a key listed out of byte order)."""
    for chunk in chunks(list(uris)):
        session.execute(
            update(Image)
            .where(one_of(session, Image.uri, chunk), Image.unlisted_at == listing_start)
            .values(unlisted_at=None)
            .execution_options(synchronize_session=False)
        )


def _gone(
    session: Session,
    uri_prefix: str,
    listing_start: datetime,
    shown_up_to: str | None,
    *,
    marked: bool,
) -> ColumnElement[bool]:
    known = and_(current_image(), Image.first_seen_at < listing_start)
    # After the last key shown, no page covered the range: all of it is unlisted.
    after_last = _in_prefix(session, uri_prefix, shown_up_to)
    if not marked:
        return and_(known, after_last)
    return and_(
        known, _in_prefix(session, uri_prefix), or_(Image.unlisted_at == listing_start, after_last)
    )


def _known_before(
    session: Session, uri_prefix: str, listing_start: datetime
) -> ColumnElement[bool]:
    return and_(
        current_image(), _in_prefix(session, uri_prefix), Image.first_seen_at < listing_start
    )


def count_gone(
    session: Session,
    uri_prefix: str,
    listing_start: datetime,
    shown_up_to: str | None,
    *,
    marked: bool,
) -> int:
    """The current images under ``uri_prefix``, registered before the listing started at
    ``listing_start``, that it did not show: the ones it marked, and those after
    ``shown_up_to``, the last key it showed (None: it showed none).

    Args:
        marked: whether the listing marked any; when not, only the range after the last
            key is read, not the whole prefix.
    """
    gone = _gone(session, uri_prefix, listing_start, shown_up_to, marked=marked)
    return int(session.scalar(select(func.count()).select_from(Image).where(gone)) or 0)


def count_known(session: Session, uri_prefix: str, listing_start: datetime) -> int:
    """The current images under ``uri_prefix`` registered before ``listing_start``."""
    known = _known_before(session, uri_prefix, listing_start)
    return int(session.scalar(select(func.count()).select_from(Image).where(known)) or 0)


def retire_gone(
    session: Session,
    uri_prefix: str,
    listing_start: datetime,
    shown_up_to: str | None,
    *,
    marked: bool,
) -> int:
    """Retire what :func:`count_gone` counts, after a complete listing; returns how many."""
    retired = session.scalars(
        update(Image)
        .where(_gone(session, uri_prefix, listing_start, shown_up_to, marked=marked))
        .values(retired_at=database_now(session))
        .returning(Image.id)
        .execution_options(synchronize_session=False)
    ).all()
    # A retired image shows no tags.
    refresh_shown_tags(session, retired)
    return len(retired)
