"""The object store interface every backend implements, and the rules keys follow.

A key names one object relative to the store root: '/'-separated segments, as on S3. The same
key works on every backend, so a key is valid only if it is valid everywhere: no empty, '.' or
'..' segments, no backslash or NUL, at most 1024 UTF-8 bytes (S3's limit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mlc_core.errors import InvalidKey

MAX_KEY_BYTES = 1024


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a listing or a ``head`` tells about one object.

    Attributes:
        key: relative to the store root, '/'-separated, e.g. ``"images/a b/ü.jpg"``.
        size: length in bytes.
        etag: opaque marker that changes when the content changes; compare it, never parse it.
        modified: when the object was last written, timezone-aware UTC.
    """

    key: str
    size: int
    etag: str
    modified: datetime


class Listing:
    """The pages of one listing, and whether it saw everything under its prefix.

    Iterate it once for the pages. A listing that raised saw nothing reliable; one that ran
    to its end may still have passed over folders it could not read (a local store), which it
    names in ``unreadable``: such a listing is not ``complete``, so nothing may be concluded
    from what it did not show.
    """

    def __init__(self, pages: Callable[[Listing], Iterator[list[ObjectInfo]]]) -> None:
        """``pages(listing)`` yields the pages and appends to ``listing.unreadable``."""
        self.unreadable: list[str] = []
        self.finished = False
        self._pages = pages(self)

    def __iter__(self) -> Iterator[list[ObjectInfo]]:
        yield from self._pages
        self.finished = True

    @property
    def complete(self) -> bool:
        """True once every page was read and nothing under the prefix was passed over."""
        return self.finished and not self.unreadable


class ObjectStore(Protocol):
    """A flat namespace of byte objects: a local folder or an S3 bucket prefix.

    Every method validates its key first and raises ``InvalidKey`` before any I/O. Listings
    stream in ascending order of the keys' UTF-8 bytes (S3's order), a page at a time.
    """

    url: str
    """The store's URL for messages: ``"s3://bucket/prefix"`` or ``"/abs/folder"``."""

    root_uri: str
    """What every object's URI starts with: ``"s3://bucket/prefix/"`` or ``"file:///abs/folder/"``."""

    def uri(self, key: str) -> str:
        """Return the full URI of one object, not percent-encoded: ``root_uri + key``."""
        ...

    def list_pages(
        self, prefix: str = "", page_size: int = 1000, *, start_after: str | None = None
    ) -> Listing:
        """The objects whose key starts with ``prefix``, ``page_size`` at a time; with
        ``start_after``, only those whose key sorts after it (S3's ``StartAfter``)."""
        ...

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix``, one at a time."""
        ...

    def head(self, key: str) -> ObjectInfo:
        """Return the object's info; raise ``ObjectNotFound`` if it does not exist."""
        ...

    def get(self, key: str, *, etag: str | None = None, max_bytes: int | None = None) -> bytes:
        """Return the object's bytes.

        Args:
            key: the object.
            etag: read only this version: another one raises ``ObjectChanged``.
            max_bytes: refuse a larger object with ``ObjectTooLarge``, before reading it
                where the size is known up front and while reading it in any case.

        Raises:
            ObjectNotFound: there is no such object.
            ObjectUnreadable: the store refuses this one object for good.
        """
        ...

    def put(self, key: str, data: bytes) -> ObjectInfo:
        """Write the object whole (readers never see half of it) and return its info."""
        ...

    def exists(self, key: str) -> bool:
        """Return whether the object exists."""
        ...

    def delete(self, key: str) -> None:
        """Delete the object; deleting a missing key does nothing."""
        ...

    def check(self) -> None:
        """Raise ``StoreUnavailable`` if the store cannot be used at all."""
        ...


def _key_problem(key: str) -> str | None:
    if not key:
        return "it is empty"
    if key.startswith("/"):
        return "it must be relative to the store root, without a leading '/'"
    if "\\" in key:
        return "it contains a backslash; separate folders with '/'"
    if "\x00" in key:
        return "it contains a NUL character"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if size > MAX_KEY_BYTES:
        return f"it is {size} UTF-8 bytes long; the limit is {MAX_KEY_BYTES}"
    for segment in key.split("/"):
        if segment == "":
            return "it contains an empty segment ('//' or a trailing '/')"
        if segment in (".", ".."):
            return f"it contains a {segment!r} segment, which could escape the store root"
    return None


def validate_key(key: str) -> str:
    """Check that ``key`` names one object inside the store root.

    Args:
        key: the candidate key.

    Returns:
        ``key`` unchanged.

    Raises:
        InvalidKey: the key is empty, absolute, contains a backslash, a NUL, an empty, '.' or
            '..' segment, or is longer than 1024 UTF-8 bytes.
    """
    problem = _key_problem(key)
    if problem is not None:
        raise InvalidKey(key, problem)
    return key


def validate_prefix(prefix: str) -> str:
    """Check a listing prefix: the rules of :func:`validate_key`, but '' and a trailing '/' pass.

    Args:
        prefix: the candidate prefix; it need not end at a segment boundary ("images/ca").

    Returns:
        ``prefix`` unchanged.

    Raises:
        InvalidKey: the prefix breaks one of the key rules.
    """
    if prefix == "":
        return prefix
    problem = _key_problem(prefix.removesuffix("/"))
    if problem is not None:
        raise InvalidKey(prefix, problem)
    return prefix


def batched(items: Iterable[ObjectInfo], page_size: int) -> Iterator[list[ObjectInfo]]:
    """Group ``items`` into lists of ``page_size`` (the last one may be shorter, none empty).

    Raises:
        ValueError: ``page_size`` is smaller than 1 (raised at the call, not at the first page).
    """
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    return _batches(items, page_size)


def _batches(items: Iterable[ObjectInfo], page_size: int) -> Iterator[list[ObjectInfo]]:
    page: list[ObjectInfo] = []
    for item in items:
        page.append(item)
        if len(page) == page_size:
            yield page
            page = []
    if page:
        yield page


def key_for_uri(store: ObjectStore, uri: str) -> str | None:
    """The key of ``uri`` in ``store``, or None when the URI points outside the store."""
    root = store.root_uri
    return uri[len(root) :] if uri.startswith(root) and len(uri) > len(root) else None
