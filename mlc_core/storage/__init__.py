"""Object storage: one small interface, a local-folder backend and an S3 backend.

Pick a backend from a URL with :func:`open_store`; everything else codes against
:class:`ObjectStore`.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlsplit

from mlc_core.errors import InvalidKey, StoreUnavailable
from mlc_core.storage.base import (
    ObjectInfo,
    ObjectStore,
    key_for_uri,
    validate_key,
    validate_prefix,
)
from mlc_core.storage.local import LocalStore
from mlc_core.storage.s3 import S3Reader, S3Store

__all__ = [
    "LocalStore",
    "ObjectInfo",
    "ObjectStore",
    "S3Reader",
    "S3Store",
    "key_for_uri",
    "open_store",
    "validate_key",
    "validate_prefix",
]

_EXPECTED = "expected s3://bucket[/prefix], file:///absolute/folder or a folder path"


def open_store(url: str, *, s3_reader: S3Reader | None = None) -> ObjectStore:
    """Return the store a URL names, without any I/O (call ``check()`` for that).

    Args:
        url: ``s3://bucket[/prefix]`` for an S3 bucket (endpoint and credentials come from the
            standard AWS chain), ``file:///absolute/folder`` or a plain folder path (relative
            paths are made absolute against the current folder). Paths are taken literally,
            not percent-decoded, to match what ``uri()`` returns.
        s3_reader: who reads single objects of an S3 store (see :class:`S3Store`); the
            default is obstore where it can follow the AWS configuration.

    Returns:
        An ``S3Store`` or a ``LocalStore``.

    Raises:
        StoreUnavailable: the URL is empty, has an unknown scheme, an s3:// URL has no bucket or
            a bad prefix, or a file:// URL is not absolute or names another host.
    """
    if not url:
        raise StoreUnavailable(f"the store URL is empty; {_EXPECTED}")
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise StoreUnavailable(f"store URL {url!r} has no bucket name; {_EXPECTED}")
        if parts.query or parts.fragment:
            raise StoreUnavailable(f"store URL {url!r} has a '?' or '#' part; {_EXPECTED}")
        prefix = parts.path.removeprefix("/")
        try:
            if prefix.removesuffix("/"):
                validate_key(prefix.removesuffix("/"))
        except InvalidKey as error:
            raise StoreUnavailable(f"store URL {url!r} has a bad prefix: {error}") from None
        return S3Store(parts.netloc, prefix, reader=s3_reader)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StoreUnavailable(
                f"store URL {url!r} names host {parts.netloc!r}; file URLs must be local, "
                "as in file:///absolute/folder"
            )
        # Taken from the URL itself: parts.path would drop a '#' or '?' that is in a folder name.
        path = url[len("file://") :].removeprefix(parts.netloc) if "://" in url else ""
        if not PurePosixPath(path).is_absolute():
            raise StoreUnavailable(f"store URL {url!r} is not an absolute path; {_EXPECTED}")
        return LocalStore(path)
    if parts.scheme:
        raise StoreUnavailable(
            f"store URL {url!r} has unknown scheme {parts.scheme!r}; {_EXPECTED}"
        )
    return LocalStore(url)
