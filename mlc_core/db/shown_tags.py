"""The tags people see, kept in ``shown_tags``: what ``current_tags`` presents.

For each current image (neither superseded nor retired):

- the tags its shown version (``images.shown_model_version_id``, see :mod:`mlc_core.db.shown`)
  gave it, unless its latest scoring failed, less every tag a label names (``source`` model);
- every tag a positive label adds, with the shown version's probability of it where that
  version tagged the image (``source`` human).

This is the rule views version 4 decided in SQL on each lookup (see :mod:`mlc_core.db.views`);
a test replays random writes, labels, failures, retirements and promotions and compares the
kept rows with that SQL after every step. Everything that can change the outcome refreshes the
images it touched in the same transaction: score writes and deletions, retags, failures,
retirement, a new or restored version of an object, labels, and the shown version itself.

A refresh deletes the images' rows and inserts them again from the rule: two statements per
chunk of images, whatever changed. Functions take a session and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    delete,
    exists,
    insert,
    literal,
    select,
)
from sqlalchemy.orm import Session, aliased

from mlc_core.db._statements import chunks, one_of
from mlc_core.db.models import Image, ImageTag, Label, ShownTag

_COLUMNS = ["image_id", "tag", "probability", "model_version_id", "source"]


def _current_and_not_failed() -> ColumnElement[bool]:
    return and_(Image.superseded_at.is_(None), Image.retired_at.is_(None), Image.status != "failed")


def _model_rows(images: ColumnElement[bool]) -> Select[int, str, float, int, str]:
    named_by_a_label = exists().where(Label.image_uri == Image.uri, Label.tag == ImageTag.tag)
    return (
        select(
            Image.id,
            ImageTag.tag,
            ImageTag.probability,
            ImageTag.model_version_id,
            literal("model"),
        )
        .select_from(Image)
        .join(
            ImageTag,
            and_(
                ImageTag.image_id == Image.id,
                ImageTag.model_version_id == Image.shown_model_version_id,
            ),
        )
        .where(images, _current_and_not_failed(), ~named_by_a_label)
    )


def _human_rows(images: ColumnElement[bool]) -> Select[int, str, float, int | None, str]:
    shown = aliased(ImageTag)
    not_failed = Image.status != "failed"
    return (
        select(
            Image.id,
            Label.tag,
            shown.probability,
            case((not_failed, Image.shown_model_version_id), else_=None),
            literal("human"),
        )
        .select_from(Image)
        .join(Label, Label.image_uri == Image.uri)
        .outerjoin(
            shown,
            and_(
                shown.image_id == Image.id,
                shown.model_version_id == Image.shown_model_version_id,
                shown.tag == Label.tag,
                not_failed,
            ),
        )
        .where(images, Image.superseded_at.is_(None), Image.retired_at.is_(None), Label.positive)
    )


def refresh_shown_tags_where(session: Session, images: ColumnElement[bool]) -> None:
    """Recompute the shown tags of every image row matching ``images`` (a condition on
    :class:`Image`; rows that are not current lose theirs)."""
    # Two transactions refreshing one image (a run writing its scores while a person labels
    # it) take turns on the image row: the later one's DELETE then sees, and removes, the
    # rows the first one inserted, instead of colliding with them. SQLite writes one at a
    # time anyway and ignores FOR UPDATE.
    session.execute(select(Image.id).where(images).order_by(Image.id).with_for_update())
    session.execute(
        delete(ShownTag)
        .where(ShownTag.image_id.in_(select(Image.id).where(images)))
        .execution_options(synchronize_session=False)
    )
    session.execute(insert(ShownTag).from_select(_COLUMNS, _model_rows(images)))
    session.execute(insert(ShownTag).from_select(_COLUMNS, _human_rows(images)))


def refresh_shown_tags(session: Session, image_ids: Sequence[int]) -> None:
    """Recompute the shown tags of these image rows."""
    for chunk in chunks(sorted(set(image_ids))):
        refresh_shown_tags_where(session, Image.id.in_(chunk))


def refresh_shown_tags_of_uris(session: Session, uris: Sequence[str]) -> None:
    """Recompute the shown tags of every version of these objects (their labels changed)."""
    for chunk in chunks(sorted(set(uris))):
        refresh_shown_tags_where(session, one_of(session, Image.uri, chunk))


def refresh_all_shown_tags(session: Session) -> None:
    """Recompute every image's shown tags (a repair, and the benchmark's fill)."""
    session.execute(delete(ShownTag).execution_options(synchronize_session=False))
    everything = Image.id.is_not(None)
    session.execute(insert(ShownTag).from_select(_COLUMNS, _model_rows(everything)))
    session.execute(insert(ShownTag).from_select(_COLUMNS, _human_rows(everything)))
