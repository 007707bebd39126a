"""Errors raised by mlc.

Every error a user can cause or meet in operation is an ``MlcError``; its message is one
sentence that says what happened, what was expected and how to fix it, so the CLI can print
it as it is, without a traceback.

    MlcError
    ├── SettingsError            an MLC_ variable has a value that cannot be used
    ├── StorageError             the object store failed
    │   ├── InvalidKey           a key escapes the store root or is malformed
    │   ├── ObjectNotFound       a key that does not exist (or was deleted meanwhile)
    │   ├── ObjectChanged        an object rewritten since it was listed
    │   ├── ObjectTooLarge       an object over MLC_SCORING__MAX_OBJECT_BYTES
    │   ├── ObjectUnreadable     one object the store refuses for good (denied, archived, a link)
    │   └── StoreUnavailable     missing bucket, refused credentials, unreachable endpoint
    ├── DatabaseError            the database failed
    │   ├── DatabaseUnavailable  cannot connect
    │   └── SchemaOutOfDate      migrations have not been applied (`mlc db upgrade`)
    ├── ImageDecodeError         bytes that are not a usable image; ``reason`` is for people
    ├── LabelsFileError          a labels CSV that cannot be read at all
    ├── TrainingDataError        not enough valid labeled images to train
    ├── TrainingBudgetTooSmall   MLC_TRAINING__TIME_BUDGET_MINUTES is shorter than one epoch
    └── ModelError               a model cannot be built, found or trusted
        ├── UnknownBackbone      a backbone name that is not in the registry
        ├── ModelIntegrityError  a model file whose checksum does not match its card
        ├── NoChampionModel      scoring was asked for before any model was trained
        └── UnknownModelVersion  a model version name that does not exist
"""

from __future__ import annotations

import re


class MlcError(Exception):
    """Base class of every error mlc raises on purpose."""


# "scheme://user:password@host": the password is what lies between the user's ':' and the '@'.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^\s]*)@")


def redact_password(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    Works on URLs no parser accepts, so a malformed database URL in an error message is as
    safe to show as a good one.
    """
    return _URL_PASSWORD.sub(lambda match: f"{match['head']}***@", text)


def describe_error(error: BaseException) -> str:
    """One line about ``error`` for a person: the sentence of an mlc error as it is; any other
    error with its type, which is what gives it meaning ("KeyError: 'x'")."""
    text = str(error)
    if isinstance(error, MlcError) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class SettingsError(MlcError):
    """An ``MLC_`` setting has a value mlc cannot use."""


class StorageError(MlcError):
    """The object store failed."""


class InvalidKey(StorageError):
    """A key is empty, absolute, or escapes the store root."""

    def __init__(self, key: str, why: str) -> None:
        self.key = key
        super().__init__(f"invalid object key {key!r}: {why}")


class ObjectNotFound(StorageError):
    """The key does not exist in the store."""

    def __init__(self, key: str, store: str) -> None:
        self.key = key
        self.store = store
        super().__init__(f"object {key!r} does not exist in {store}")


class ObjectChanged(StorageError):
    """The object's content is not the version that was listed: it was rewritten since."""

    def __init__(self, key: str, expected_etag: str) -> None:
        self.key = key
        self.expected_etag = expected_etag
        super().__init__(
            f"object {key!r} changed since it was listed (etag {expected_etag!r} is gone); "
            "the next listing picks up its new version"
        )


class ObjectTooLarge(StorageError):
    """The object is larger than a read may take."""

    def __init__(self, key: str, size: int | None, limit: int) -> None:
        self.key = key
        self.size = size
        self.limit = limit
        found = f"{size:,} bytes" if size is not None else "more bytes than that"
        self.reason = (
            f"too large: {found}, above the limit of {limit:,} bytes "
            "(MLC_SCORING__MAX_OBJECT_BYTES)"
        )
        super().__init__(f"object {key!r} is {self.reason}")


class ObjectUnreadable(StorageError):
    """The store refuses this one object for good; ``reason`` is a sentence for people that
    starts with its kind ("permission denied: ...")."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"object {key!r} cannot be read: {reason}")


class StoreUnavailable(StorageError):
    """The store cannot be used at all: missing bucket, refused credentials, no endpoint."""


class DatabaseError(MlcError):
    """The database failed."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached."""


class SchemaOutOfDate(DatabaseError):
    """The database schema is missing or older than this version of mlc."""


class ImageDecodeError(MlcError):
    """The bytes are not an image mlc can use; ``reason`` is a sentence for people."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class LabelsFileError(MlcError):
    """A labels file cannot be read at all (wrong header, not a CSV)."""


class TrainingDataError(MlcError):
    """There are not enough valid labeled images to train a model."""


class TrainingBudgetTooSmall(MlcError):
    """The training time budget ran out before the first epoch ended; nothing was written."""

    def __init__(self, budget_seconds: float, first_epoch_seconds: float) -> None:
        self.budget_seconds = budget_seconds
        self.first_epoch_seconds = first_epoch_seconds
        needed = max(1, -(-int(first_epoch_seconds * 3) // 60))
        super().__init__(
            f"the training time budget ({budget_seconds / 60:.2g} min, "
            f"MLC_TRAINING__TIME_BUDGET_MINUTES) is shorter than one epoch "
            f"({first_epoch_seconds:.0f} s); no model was written: give it at least "
            f"{needed} min, or train at a smaller MLC_TRAINING__IMAGE_SIZE"
        )


class ModelError(MlcError):
    """A model cannot be built, found or trusted."""


class UnknownBackbone(ModelError):
    """A backbone name that is not in the registry."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(known))}")


class ModelIntegrityError(ModelError):
    """A model file's checksum does not match the one recorded with its version."""


class NoChampionModel(ModelError):
    """No model version is champion yet."""

    def __init__(self) -> None:
        super().__init__("there is no champion model yet; train one first with `mlc train`")


class UnknownModelVersion(ModelError):
    """A model version that does not exist."""

    def __init__(self, version: str, known: list[str]) -> None:
        self.version = version
        self.known = known
        if known:
            listed = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
            there = f"`mlc models` lists the versions there are ({listed})"
        else:
            there = "`mlc models` lists them, and none has been trained yet"
        super().__init__(f"there is no model version {version!r}; {there}")


class UnknownImage(MlcError):
    """A key that names no image mlc has registered."""

    def __init__(self, key: str, similar: list[str]) -> None:
        self.key = key
        self.similar = similar
        hint = (
            f"did you mean {', '.join(similar)}?"
            if similar
            else "`mlc score` registers the images under its prefixes"
        )
        super().__init__(f"no image with the key {key!r} is in the database; {hint}")


class UnknownTag(MlcError):
    """A tag that no model version knows and no label names."""

    def __init__(self, tag: str, close: list[str], known: list[str]) -> None:
        self.tag = tag
        self.close = close
        if close:
            hint = f"close matches: {', '.join(close)}"
        elif known:
            hint = f"known tags: {', '.join(known[:20])}" + (", ..." if len(known) > 20 else "")
        else:
            hint = "no model version or label names any tag yet"
        super().__init__(f"no model version or label knows the tag {tag!r}; {hint}")


class ContradictoryLabels(MlcError):
    """A correction that adds and removes the same tag."""

    def __init__(self, key: str, tags: list[str]) -> None:
        self.tags = tags
        super().__init__(
            f"{key}: {', '.join(tags)} cannot be both added and removed; say which one it is"
        )
