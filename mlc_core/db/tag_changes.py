"""What changed between two model versions, per tag, kept as counts in ``tag_changes``.

For each pair of versions (the older id first) and each tag: on the images both versions
scored, how many the newer one tags and the older one does not (``gained``), and the other way
round (``lost``). Each image adds its own share to the counts of the pairs of versions that
scored it. A write that changes one version's scores or tags of some images takes those
images' shares of that version's pairs out before it and adds them back after it, in the same
transaction (:func:`shares_of`, :func:`add_shares`). Increments commute, so two runs writing
at once add up right; counts are upserted in key order, so writers never wait in a circle.

Functions take a session and never commit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, delete, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from mlc_core.db._statements import chunks, dialect_insert
from mlc_core.db.models import ImageTag, Score, TagChange

# (old version id, new version id, tag) -> [gained, lost]
Shares = dict[tuple[int, int, str], list[int]]

_OLDER, _NEWER = aliased(Score, name="older"), aliased(Score, name="newer")


def _shares_statement() -> Select[int, int, str, Any, Any]:
    """Per pair of versions that both scored an image and per tag either gave it: the images
    the newer one tags and the older one does not, and the other way round."""
    tag, other = aliased(ImageTag, name="tag"), aliased(ImageTag, name="other")

    def tagged_by(version_id: Any) -> ColumnElement[bool]:
        return exists().where(
            other.image_id == tag.image_id,
            other.model_version_id == version_id,
            other.tag == tag.tag,
        )

    gained = and_(
        tag.model_version_id == _NEWER.model_version_id, ~tagged_by(_OLDER.model_version_id)
    )
    lost = and_(
        tag.model_version_id == _OLDER.model_version_id, ~tagged_by(_NEWER.model_version_id)
    )
    return (
        select(
            _OLDER.model_version_id,
            _NEWER.model_version_id,
            tag.tag,
            func.sum(case((gained, 1), else_=0)),
            func.sum(case((lost, 1), else_=0)),
        )
        .select_from(_OLDER)
        .join(
            _NEWER,
            and_(
                _NEWER.image_id == _OLDER.image_id,
                _NEWER.model_version_id > _OLDER.model_version_id,
            ),
        )
        .join(
            tag,
            and_(
                tag.image_id == _OLDER.image_id,
                or_(
                    tag.model_version_id == _OLDER.model_version_id,
                    tag.model_version_id == _NEWER.model_version_id,
                ),
            ),
        )
        .group_by(_OLDER.model_version_id, _NEWER.model_version_id, tag.tag)
    )


def shares_of(session: Session, image_ids: Sequence[int], model_version_id: int) -> Shares:
    """These images' shares of the counts of every pair of versions with ``model_version_id``."""
    shares: Shares = {}
    involves = or_(
        _OLDER.model_version_id == model_version_id, _NEWER.model_version_id == model_version_id
    )
    for chunk in chunks(sorted(set(image_ids))):
        statement = _shares_statement().where(_OLDER.image_id.in_(chunk), involves)
        for old, new, tag, gained, lost in session.execute(statement):
            counts = shares.setdefault((old, new, tag), [0, 0])
            counts[0] += int(gained)
            counts[1] += int(lost)
    return shares


def add_shares(session: Session, before: Shares, after: Shares) -> None:
    """Move the counts from the shares ``before`` a write to those ``after`` it."""
    delta: Counter[tuple[int, int, str, int]] = Counter()
    for sign, shares in ((-1, before), (1, after)):
        for key, (gained, lost) in shares.items():
            delta[(*key, 0)] += sign * gained
            delta[(*key, 1)] += sign * lost
    rows = []
    for key in sorted({(old, new, tag) for old, new, tag, _ in delta}):
        gained, lost = delta[(*key, 0)], delta[(*key, 1)]
        if gained or lost:
            rows.append(
                {"old_version_id": key[0], "new_version_id": key[1], "tag": key[2]}
                | {"gained": gained, "lost": lost}
            )
    if not rows:
        return
    insert = dialect_insert(session, TagChange)
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["old_version_id", "new_version_id", "tag"],
            set_={
                "gained": TagChange.gained + insert.excluded.gained,
                "lost": TagChange.lost + insert.excluded.lost,
            },
        ),
        rows,
    )


def refresh_all_tag_changes(session: Session) -> None:
    """Count every pair of versions again from the scores and tags (a repair, the benchmark's
    fill)."""
    session.execute(delete(TagChange).execution_options(synchronize_session=False))
    rows = [
        {"old_version_id": old, "new_version_id": new, "tag": tag, "gained": g, "lost": lost}
        for old, new, tag, g, lost in session.execute(_shares_statement())
    ]
    if rows:
        session.execute(dialect_insert(session, TagChange), rows)
