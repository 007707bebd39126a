"""Thumbnails for the web page: read from the store, decoded like the scorer decodes, cached.

A thumbnail is a JPEG of the image's newest version (its URI and etag name the cache file, so a
rewritten object gets a new thumbnail and the old one ages out). The cache lives on disk with a
size bound: past it, the least recently used files go. A page of 200 images asks for 200
thumbnails at once; each is decoded by one request only (the others wait for its result:
single flight), and at most ``workers`` decode at a time, so memory stays bounded by a few
decoded images whatever the page size.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mlc_core.errors import ImageDecodeError, ObjectUnreadable
from mlc_core.images import decode_preview
from mlc_core.settings import PILLOW_DEFAULT_MAX_PIXELS
from mlc_core.storage import ObjectStore

logger = logging.getLogger(__name__)

_JPEG_QUALITY = 85
# Eviction goes below the bound by this share, so a full cache does not scan its folder on
# every new thumbnail.
_EVICTION_HEADROOM = 0.9


@dataclass(frozen=True)
class ThumbnailFailure:
    """Why an image has no thumbnail: a sentence for people, shown on the placeholder."""

    reason: str


class ThumbnailCache:
    """Thumbnails of store objects, cached under ``directory`` within ``max_bytes``.

    Safe to use from many threads at once.
    """

    def __init__(
        self,
        store: ObjectStore,
        directory: Path,
        *,
        max_bytes: int,
        workers: int = 2,
        max_pixels: int = PILLOW_DEFAULT_MAX_PIXELS,
        max_object_bytes: int | None = None,
    ) -> None:
        self.store = store
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.max_object_bytes = max_object_bytes
        # How often each key was decoded: once per version and size, however many asked.
        self.decodes: Counter[str] = Counter()
        self._decoding = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._in_flight: dict[str, threading.Lock] = {}
        self._size: int | None = None

    def thumbnail(self, key: str, etag: str, max_side: int = 256) -> bytes | ThumbnailFailure:
        """The JPEG thumbnail of the object at ``key`` (version ``etag``), its longest side at
        most ``max_side``, or why there is none.

        Raises:
            InvalidKey: the key is malformed (before any I/O).
            StoreUnavailable: the store cannot be used at all.
            ObjectNotFound: the object is gone.
        """
        path = self.directory / self._file_name(key, etag, max_side)
        cached = _read(path)
        if cached is not None:
            return cached
        with self._lock:
            flight = self._in_flight.setdefault(path.name, threading.Lock())
        with flight:
            # Whoever held the flight lock before us wrote the file (or found it broken).
            cached = _read(path)
            if cached is not None:
                return cached
            try:
                return self._make(key, path, max_side)
            finally:
                with self._lock:
                    self._in_flight.pop(path.name, None)

    def _file_name(self, key: str, etag: str, max_side: int) -> str:
        name = f"{self.store.uri(key)}\0{etag}\0{max_side}"
        return hashlib.sha256(name.encode()).hexdigest() + ".jpg"

    def _make(self, key: str, path: Path, max_side: int) -> bytes | ThumbnailFailure:
        with self._decoding:
            try:
                data = self.store.get(key, max_bytes=self.max_object_bytes)
            except ObjectUnreadable as error:
                return ThumbnailFailure(error.reason)
            try:
                with self._lock:
                    self.decodes[key] += 1
                picture = decode_preview(data, max_side, max_pixels=self.max_pixels)
            except ImageDecodeError as error:
                return ThumbnailFailure(error.reason)
            del data
            buffer = io.BytesIO()
            picture.save(buffer, "JPEG", quality=_JPEG_QUALITY)
        thumbnail = buffer.getvalue()
        self._store(path, thumbnail)
        return thumbnail

    def _store(self, path: Path, thumbnail: bytes) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{threading.get_ident()}.part")
            partial.write_bytes(thumbnail)
            os.replace(partial, path)
        except OSError as error:
            # A cache that cannot be written costs decoding time, never a page.
            logger.warning("cannot cache a thumbnail in %s: %s", self.directory, error)
            return
        with self._lock:
            self._size = (self._cached_bytes() if self._size is None else self._size) + len(
                thumbnail
            )
            if self._size > self.max_bytes:
                self._size = self._evict(int(self.max_bytes * _EVICTION_HEADROOM))

    def _cached_bytes(self) -> int:
        total = 0
        for entry in self._entries():
            try:
                total += entry.stat().st_size
            except FileNotFoundError:
                continue
        return total

    def _entries(self) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self.directory) as entries:
                return [e for e in entries if e.name.endswith(".jpg") and e.is_file()]
        except FileNotFoundError:
            return []

    def _evict(self, target: int) -> int:
        """Delete the least recently used thumbnails until at most ``target`` bytes remain."""
        files = []
        for entry in self._entries():
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            files.append((stat.st_mtime_ns, stat.st_size, entry.path))
        files.sort()
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= target:
                break
            Path(path).unlink(missing_ok=True)
            total -= size
        return total


def _read(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    # A read is a use: eviction keeps what people look at. The time goes in the mtime, since
    # many file systems do not keep access times.
    with contextlib.suppress(OSError):
        os.utime(path)
    return data
