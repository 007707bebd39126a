"""A person's corrections of one image's tags: ``mlc labels set/clear`` and the web page.

A correction is a label like any imported one: it wins over every model in the views, survives
rescoring, retagging and promotions, and is a positive or negative example for the next
training. It names only the tags it changes; the image's other classes stay as they were (a
whole tag set stated before keeps its meaning, see :class:`~mlc_core.db.models.Label`).
Clearing hands tags back to the model.

A label belongs to the image's key, as imported labels do; the key must name an image mlc has
registered, so a typo never creates a label nobody will see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from mlc_core.db.image_detail import similar_uris
from mlc_core.db.labels import LabelRecord, clear_labels, labels_of, upsert_labels
from mlc_core.db.model_versions import known_classes
from mlc_core.db.models import Image
from mlc_core.errors import ContradictoryLabels, InvalidKey, MlcError, UnknownImage
from mlc_core.labels import normalize_tag
from mlc_core.storage import ObjectStore, key_for_uri, validate_key


@dataclass(frozen=True)
class Correction:
    """What a correction changed, and what is worth telling the person.

    ``unchanged`` tags already had the stated label; ``unpredictable`` tags are ones no model
    version can predict yet (the label is kept and teaches the next model that knows them).
    """

    key: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    cleared: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    unpredictable: tuple[str, ...] = ()


def parse_changes(changes: Sequence[str]) -> tuple[list[str], list[str]]:
    """``+sea -trees`` as the tags to add and the tags to remove, normalized.

    Raises:
        MlcError: a change has no sign, or its tag is malformed.
    """
    add: list[str] = []
    remove: list[str] = []
    for change in changes:
        sign, raw = change[:1], change[1:]
        if sign not in ("+", "-"):
            raise MlcError(f"{change!r}: write +TAG to add a tag or -TAG to remove one")
        try:
            tag = normalize_tag(raw)
        except ValueError as error:
            raise MlcError(f"{change!r}: {error}") from None
        (add if sign == "+" else remove).append(tag)
    return add, remove


def registered_uri(session: Session, store: ObjectStore, key: str) -> str:
    """The URI of the image at ``key``, which mlc must have registered.

    Raises:
        MlcError: the key is malformed, or no image has it (with keys that look like it).
    """
    try:
        uri = store.uri(validate_key(key))
    except InvalidKey as error:
        raise MlcError(str(error)) from None
    if not session.scalar(select(exists().where(Image.uri == uri))):
        similar = [key_for_uri(store, other) or other for other in similar_uris(session, uri)]
        raise UnknownImage(key, similar)
    return uri


def correct_tags(
    session: Session,
    store: ObjectStore,
    key: str,
    *,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    source: str,
) -> Correction:
    """Record that the image at ``key`` carries the ``add`` tags and not the ``remove`` ones.

    Raises:
        ContradictoryLabels: a tag is both added and removed.
        UnknownImage: no image has this key.
        MlcError: nothing to change.
    """
    if both := sorted(set(add) & set(remove)):
        raise ContradictoryLabels(key, both)
    if not add and not remove:
        raise MlcError("name at least one tag to change: +TAG to add it, -TAG to remove it")
    uri = registered_uri(session, store, key)
    before = {label.tag: label.positive for label in labels_of(session, uri)}
    wanted = {tag: True for tag in add} | {tag: False for tag in remove}
    changed = {tag: positive for tag, positive in wanted.items() if before.get(tag) != positive}
    upsert_labels(
        session,
        [
            LabelRecord(uri, tag, positive, source, complete=False)
            for tag, positive in changed.items()
        ],
    )
    predictable = known_classes(session)
    return Correction(
        key=key,
        added=tuple(sorted(t for t, positive in changed.items() if positive)),
        removed=tuple(sorted(t for t, positive in changed.items() if not positive)),
        unchanged=tuple(sorted(set(wanted) - set(changed))),
        unpredictable=tuple(sorted(t for t in add if t not in predictable)),
    )


def clear_corrections(
    session: Session, store: ObjectStore, key: str, tags: Sequence[str] = ()
) -> Correction:
    """Hand the named tags of the image at ``key`` back to the model (all of them when none
    is named): their labels are deleted.

    Raises:
        UnknownImage: no image has this key.
    """
    uri = registered_uri(session, store, key)
    labelled = {label.tag for label in labels_of(session, uri)}
    to_clear = sorted(labelled & set(tags)) if tags else sorted(labelled)
    clear_labels(session, uri, to_clear)
    return Correction(
        key=key, cleared=tuple(to_clear), unchanged=tuple(sorted(set(tags) - labelled))
    )
