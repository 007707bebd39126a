"""Image versions: register what the store lists, look versions up, record failures, retire
what the store no longer has.

An image row is one version of an object: ``(uri, etag)`` is unique, a changed object is a
new row, and the older one is marked ``superseded_at``. An object gone from the store is
``retired_at``: it leaves the views and keeps its history (what a listing did not show is
found by :mod:`mlc_core.db.unlisted`). The current version of an object is the one neither
superseded nor retired (:func:`current_image`).

Functions take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, true, update
from sqlalchemy.orm import Session

from mlc_core.db._statements import (
    chunks,
    escape_like,
    insert_ignoring_conflicts,
    one_of,
    starts_with_any,
)
from mlc_core.db.engine import database_now
from mlc_core.db.models import Image
from mlc_core.db.shown_tags import refresh_shown_tags
from mlc_core.db.views import scoring_failures


def current_image() -> ColumnElement[bool]:
    """The image row is the current version of its object: not superseded, not retired."""
    return and_(Image.superseded_at.is_(None), Image.retired_at.is_(None))


@dataclass(frozen=True)
class ImageRecord:
    """One object as the store lists it."""

    uri: str
    etag: str
    size: int
    modified_at: datetime | None


@dataclass(frozen=True)
class ImageVersion:
    """A registered version of an object: its row id and whether it is the current one."""

    id: int
    current: bool


@dataclass(frozen=True)
class ClaimedImage:
    """An image a scoring run holds, with what it needs to read exactly that version."""

    id: int
    uri: str
    etag: str
    size: int


def find_image_versions(
    session: Session, versions: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], ImageVersion]:
    """The registered rows of these ``(uri, etag)`` pairs; pairs not registered are absent."""
    wanted = set(versions)
    found: dict[tuple[str, str], ImageVersion] = {}
    for chunk in chunks(sorted({uri for uri, _ in wanted})):
        rows = session.execute(
            select(Image.id, Image.uri, Image.etag, current_image()).where(
                one_of(session, Image.uri, chunk)
            )
        )
        for image_id, uri, etag, current in rows:
            if (uri, etag) in wanted:
                found[(uri, etag)] = ImageVersion(image_id, bool(current))
    return found


def register_images(session: Session, images: Sequence[ImageRecord]) -> dict[tuple[str, str], int]:
    """Record the listed objects as the current versions of their URIs.

    A ``(uri, etag)`` not seen before becomes a new image row (status ``new``); one already
    known is left as it is. Every other version of the same URI is marked superseded (from now
    on). A listed version that had been superseded becomes current again (the object was
    restored) only when it is not older than the current one: a listing that overlapped a
    rewrite cannot bring the old bytes back. A retired version that is listed again is current
    again. When one URI is listed with two etags, the later record is the current one.

    Returns:
        ``(uri, etag) -> images.id`` for every given record.
    """
    records = list({(image.uri, image.etag): image for image in images}.values())
    if not records:
        return {}
    now = database_now(session)
    pairs = [(record.uri, record.etag) for record in records]
    ids = {pair: version.id for pair, version in find_image_versions(session, pairs).items()}
    missing = [record for record in records if (record.uri, record.etag) not in ids]
    changed: set[int] = set()
    if missing:
        # Only the missing rows are sent: on PostgreSQL every conflicting row of an
        # INSERT ... ON CONFLICT still uses up a sequence number. The conflict clause covers a
        # concurrent run registering the same object meanwhile.
        session.execute(
            insert_ignoring_conflicts(session, Image, ["uri", "etag"]),
            [
                {
                    "uri": record.uri,
                    "etag": record.etag,
                    "size": record.size,
                    "modified_at": record.modified_at,
                    "first_seen_at": now,
                    "status": "new",
                }
                for record in missing
            ],
        )
        added = find_image_versions(session, [(record.uri, record.etag) for record in missing])
        ids.update({pair: version.id for pair, version in added.items()})
        changed.update(version.id for version in added.values())
    listed = {
        record.uri: (ids[(record.uri, record.etag)], record.modified_at) for record in records
    }
    for chunk in chunks(list(listed.items())):
        changed |= _make_current(session, dict(chunk), now)
    # A new current version shows its object's labels; a superseded one shows nothing.
    refresh_shown_tags(session, list(changed))
    return ids


def _make_current(
    session: Session, listed: dict[str, tuple[int, datetime | None]], now: datetime
) -> set[int]:
    """Make each URI's listed version (id, listed modified time) its current one, unless a
    current version of the URI is newer than that time; returns the rows that may have
    changed (made current again, or superseded)."""
    ids = [image_id for image_id, _ in listed.values()]
    not_current = set(
        session.scalars(
            select(Image.id).where(
                Image.id.in_(ids),
                or_(Image.superseded_at.is_not(None), Image.retired_at.is_not(None)),
            )
        )
    )
    newer = Image.__table__.alias("newer")
    for image_id, modified_at in listed.values():
        if image_id not in not_current:
            continue
        newer_current = exists().where(
            newer.c.uri == Image.uri,
            newer.c.id != Image.id,
            newer.c.superseded_at.is_(None),
            newer.c.modified_at > modified_at,
        )
        session.execute(
            update(Image)
            .where(Image.id == image_id, ~newer_current if modified_at is not None else true())
            .values(superseded_at=None, retired_at=None, modified_at=modified_at)
            .execution_options(synchronize_session=False)
        )
    current = set(
        session.scalars(select(Image.id).where(Image.id.in_(ids), Image.superseded_at.is_(None)))
    )
    uris = [uri for uri, (image_id, _) in listed.items() if image_id in current]
    superseded = session.scalars(
        update(Image)
        .where(
            one_of(session, Image.uri, uris),
            Image.id.not_in(current),
            Image.superseded_at.is_(None),
        )
        .values(superseded_at=now)
        .returning(Image.id)
        .execution_options(synchronize_session=False)
    ).all()
    return not_current | set(superseded)


def retire_images(session: Session, image_ids: Sequence[int]) -> int:
    """Retire these image versions (their objects are gone); returns how many were current."""
    retired = 0
    now = database_now(session)
    for chunk in chunks(list(image_ids)):
        result = session.execute(
            update(Image)
            .where(Image.id.in_(chunk), Image.retired_at.is_(None))
            .values(retired_at=now)
            .execution_options(synchronize_session=False)
        )
        retired += int(getattr(result, "rowcount", 0))
    refresh_shown_tags(session, image_ids)
    return retired


def record_failures(session: Session, failures: Sequence[tuple[int, str]]) -> None:
    """Mark images as failed with the reason (a sentence for people) and the time.

    Args:
        failures: ``(images.id, reason)`` pairs; for a repeated id the later reason wins.
    """
    reasons = dict(failures)
    if not reasons:
        return
    now = database_now(session)
    session.execute(
        update(Image),
        [
            {"id": image_id, "status": "failed", "error": reason, "failed_at": now}
            for image_id, reason in reasons.items()
        ],
    )
    refresh_shown_tags(session, list(reasons))


@dataclass(frozen=True)
class Failure:
    """A current image whose latest scoring failed, with the reason and when."""

    uri: str
    reason: str
    failed_at: datetime | None


def list_failures(
    session: Session, *, reason: str | None = None, uri_prefix: str = "", limit: int = 100
) -> list[Failure]:
    """The failure ledger (the ``scoring_failures`` view), newest first.

    Args:
        reason: only failures whose reason contains this text (any case).
    """
    statement = select(
        scoring_failures.c.image_uri, scoring_failures.c.error, scoring_failures.c.failed_at
    )
    if reason:
        statement = statement.where(
            func.lower(scoring_failures.c.error).like(
                "%" + escape_like(reason.lower()) + "%", escape="\\"
            )
        )
    if uri_prefix:
        statement = statement.where(starts_with_any(scoring_failures.c.image_uri, [uri_prefix]))
    rows = session.execute(
        statement.order_by(scoring_failures.c.failed_at.desc(), scoring_failures.c.image_uri).limit(
            limit
        )
    ).all()
    return [Failure(uri, error or "", failed_at) for uri, error, failed_at in rows]


def count_failures_by_reason(session: Session) -> dict[str, int]:
    """How many current images failed, by their full reason."""
    return {
        error or "": int(count)
        for error, count in session.execute(
            select(scoring_failures.c.error, func.count()).group_by(scoring_failures.c.error)
        )
    }
