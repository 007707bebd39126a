"""Image versions: register what the store lists, look versions up, record decode failures.

An image row is one version of an object: ``(uri, etag)`` is unique, a changed object is a
new row, and the older one is marked ``superseded_at``.

Functions take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from mlc_core.db._statements import chunks, insert_ignoring_conflicts, starts_with_any
from mlc_core.db.models import Image, utc_now


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


def find_image_versions(
    session: Session, versions: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], ImageVersion]:
    """The registered rows of these ``(uri, etag)`` pairs; pairs not registered are absent."""
    wanted = set(versions)
    found: dict[tuple[str, str], ImageVersion] = {}
    for chunk in chunks(sorted({uri for uri, _ in wanted})):
        rows = session.execute(
            select(Image.id, Image.uri, Image.etag, Image.superseded_at).where(Image.uri.in_(chunk))
        )
        for image_id, uri, etag, superseded_at in rows:
            if (uri, etag) in wanted:
                found[(uri, etag)] = ImageVersion(image_id, superseded_at is None)
    return found


def register_images(session: Session, images: Sequence[ImageRecord]) -> dict[tuple[str, str], int]:
    """Record the listed objects as the current versions of their URIs.

    A ``(uri, etag)`` not seen before becomes a new image row (status ``new``); one already
    known is left as it is. Every other version of the same URI is marked superseded (from now
    on), and a listed version that had been superseded becomes current again (the object was
    restored). When one URI is listed with two etags, the later record is the current one.

    Returns:
        ``(uri, etag) -> images.id`` for every given record.
    """
    records = list({(image.uri, image.etag): image for image in images}.values())
    if not records:
        return {}
    now = utc_now()
    pairs = [(record.uri, record.etag) for record in records]
    ids = {pair: version.id for pair, version in find_image_versions(session, pairs).items()}
    missing = [record for record in records if (record.uri, record.etag) not in ids]
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
    current = {record.uri: ids[(record.uri, record.etag)] for record in records}
    for chunk in chunks(list(current.items())):
        _make_current(session, [uri for uri, _ in chunk], [image_id for _, image_id in chunk], now)
    return ids


def _make_current(
    session: Session, uris: Sequence[str], current_ids: Sequence[int], now: datetime
) -> None:
    session.execute(
        update(Image)
        .where(Image.id.in_(current_ids), Image.superseded_at.is_not(None))
        .values(superseded_at=None)
    )
    session.execute(
        update(Image)
        .where(Image.uri.in_(uris), Image.id.not_in(current_ids), Image.superseded_at.is_(None))
        .values(superseded_at=now)
    )


def record_failures(session: Session, failures: Sequence[tuple[int, str]]) -> None:
    """Mark images as failed with the reason (a sentence for people) and the time.

    Args:
        failures: ``(images.id, reason)`` pairs; for a repeated id the later reason wins.
    """
    reasons = dict(failures)
    if not reasons:
        return
    now = utc_now()
    session.execute(
        update(Image),
        [
            {"id": image_id, "status": "failed", "error": reason, "failed_at": now}
            for image_id, reason in reasons.items()
        ],
    )


def has_current_images(session: Session, uri_prefix: str) -> bool:
    """Whether any current image version has a URI starting with ``uri_prefix``."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    Image.superseded_at.is_(None), starts_with_any(Image.uri, [uri_prefix])
                )
            )
        )
    )
