"""An object store in an S3 bucket (AWS or any S3-compatible server), through boto3.

The endpoint, region and credentials come only from boto3's standard chain: ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_PROFILE`` and the
files in ``~/.aws``. Every botocore error is translated into the ``StorageError`` tree.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from mlc_core.errors import (
    InvalidKey,
    ObjectChanged,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
    StoreUnavailable,
)
from mlc_core.storage.base import Listing, ObjectInfo, batched, validate_key, validate_prefix
from mlc_core.storage.s3_client import (
    CONNECT_TIMEOUT_SECONDS,
    READ_TIMEOUT_SECONDS,
    etag_of,
    make_clients,
    response_time,
)
from mlc_core.storage.s3_errors import (
    MISSING_CODES,
    PRECONDITION_CODES,
    error_code,
    request_error,
)
from mlc_core.storage.s3_reads import ObstoreReader

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

# S3 returns at most 1000 keys per ListObjectsV2 call.
MAX_LIST_PAGE = 1000

# Who reads single objects: obstore (about a fifth of boto3's client CPU per GET, see
# s3_reads) where it can follow the AWS configuration, else boto3.
S3Reader = Literal["obstore", "boto3"]
DEFAULT_READER: S3Reader = "obstore"

# What botocore raises; anything else is a bug of ours and is left alone.
_BOTO_ERRORS = (ClientError, BotoCoreError)
# botocore's own rule for a plain bucket name; anything else it rejects with a raw error.
_BUCKET_NAME = re.compile(r"^[A-Za-z0-9.\-_]{1,255}$")


class S3Store:
    """Objects under ``prefix`` in ``bucket``; keys are relative to that prefix.

    The boto3 client is made on first use and shared by all threads (boto3 clients are
    thread-safe). It always uses path-style addressing (``http://host:port/bucket/key``): it is
    the style every S3-compatible server understands without wildcard DNS (``localhost``, a
    compose service name, an IP), and AWS S3 still serves it.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        reader: S3Reader | None = None,
    ) -> None:
        """Describe the store; no network I/O happens until a method needs it.

        Args:
            bucket: the bucket name.
            prefix: the folder in the bucket the store lives in ('' for the whole bucket); a
                trailing '/' is optional.
            connect_timeout: seconds to wait for a TCP connection, per attempt.
            read_timeout: seconds to wait for the server to send data, per attempt.
            reader: who reads single objects (``get``): ``"obstore"`` (the default, when it
                can follow the AWS configuration; see :mod:`mlc_core.storage.s3_reads`) or
                ``"boto3"``. Everything else always goes through boto3.

        Raises:
            StoreUnavailable: the bucket name is not valid.
            InvalidKey: the prefix breaks the key rules.
        """
        if not _BUCKET_NAME.match(bucket):
            raise StoreUnavailable(
                f"{bucket!r} is not a valid S3 bucket name; use letters, digits, '.', '-' and '_'"
            )
        folder = prefix.removesuffix("/")
        if folder:
            validate_key(folder)
        self.bucket = bucket
        self.prefix = folder
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.reader: S3Reader = reader or DEFAULT_READER
        self.url = f"s3://{bucket}/{folder}" if folder else f"s3://{bucket}"
        # The trailing '/' keeps a store at "p1" from seeing the keys of "p10/".
        self._root = f"{folder}/" if folder else ""
        self.root_uri = f"s3://{bucket}/{self._root}"
        self._client_lock = threading.Lock()
        self._s3: S3Client | None = None
        self._obstore: ObstoreReader | None = None
        self._bucket_seen = False
        # When the store last answered a listing; -inf until it has.
        self._readable_at = -math.inf

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # The client and its lock cannot be pickled; a copy in another process makes its own.
        return (
            _rebuild,
            (self.bucket, self.prefix, self.connect_timeout, self.read_timeout, self.reader),
        )

    def uri(self, key: str) -> str:
        """Return ``s3://bucket/prefix/<key>`` (not percent-encoded).

        Raises:
            InvalidKey: the key breaks the key rules.
        """
        return f"s3://{self.bucket}/{self._object_key(key)}"

    def list_pages(
        self, prefix: str = "", page_size: int = 1000, *, start_after: str | None = None
    ) -> Listing:
        """The objects whose key starts with ``prefix``, ``page_size`` at a time.

        Objects come in the order the server lists them, which on AWS S3 is ascending UTF-8
        byte order (SeaweedFS differs: it lists "a/x" before "a-b"). The zero-byte "folder"
        markers some consoles create (keys ending in '/') are left out, and so are other keys
        that break the key rules, with a warning in the log. With ``start_after`` the server
        starts the listing after that key (``StartAfter``): what sorts before it costs nothing.

        Raises:
            InvalidKey: the prefix breaks the key rules (raised at the call).
            ValueError: ``page_size`` is smaller than 1 (raised at the call).
            StoreUnavailable: missing bucket, refused credentials, unreachable endpoint.
            StorageError: any other failure of the server.
        """
        validate_prefix(prefix)
        validate_prefix(start_after or "")
        request_size = min(page_size, MAX_LIST_PAGE)
        walk = self._walk(prefix, request_size, start_after)
        return Listing(lambda _: batched(walk, page_size))

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix``, in :meth:`list_pages` order."""
        for page in self.list_pages(prefix):
            yield from page

    def head(self, key: str) -> ObjectInfo:
        """Return the size, etag and modification time of one object without reading it.

        Raises:
            InvalidKey: the key breaks the key rules.
            ObjectNotFound: the bucket has no such object.
            StoreUnavailable: missing bucket, refused credentials, unreachable endpoint.
            StorageError: any other failure of the server.
        """
        with self._object_request(key) as (client, object_key):
            try:
                response = client.head_object(Bucket=self.bucket, Key=object_key)
            except ClientError as error:
                # A HEAD answer has no body, so a missing bucket and a missing key are the same
                # 404; ask about the bucket once per store to tell them apart.
                if error_code(error) in MISSING_CODES and not self._bucket_seen:
                    self.check()
                raise
        self._bucket_seen = True
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            etag=etag_of(response["ETag"]),
            modified=response["LastModified"].astimezone(UTC),
        )

    def get(self, key: str, *, etag: str | None = None, max_bytes: int | None = None) -> bytes:
        """Return the bytes of one object (see :meth:`ObjectStore.get`).

        ``etag`` is sent as ``If-Match``, so the server itself refuses another version.

        Raises:
            InvalidKey: the key breaks the key rules.
            ObjectNotFound: the bucket has no such object.
            ObjectChanged: ``etag`` is given and the object is another version.
            ObjectTooLarge: the object is larger than ``max_bytes``.
            ObjectUnreadable: this object is refused for good (denied while the store is
                readable, archived, encrypted with a key the identity may not use).
            StoreUnavailable: missing bucket, refused credentials, unreachable endpoint.
            StorageError: any other failure of the server.
        """
        arguments: dict[str, Any] = {"IfMatch": f'"{etag}"'} if etag is not None else {}
        with self._object_request(key) as (client, object_key):
            if self._obstore is not None:
                return self._read_with_obstore(self._obstore, key, object_key, etag, max_bytes)
            try:
                response = client.get_object(Bucket=self.bucket, Key=object_key, **arguments)
            except ClientError as error:
                if etag is not None and error_code(error) in PRECONDITION_CODES:
                    raise ObjectChanged(key, etag) from error
                raise
            body = response["Body"]
            try:
                if max_bytes is not None and response["ContentLength"] > max_bytes:
                    raise ObjectTooLarge(key, response["ContentLength"], max_bytes)
                data = body.read() if max_bytes is None else body.read(max_bytes + 1)
            finally:
                body.close()
        if max_bytes is not None and len(data) > max_bytes:
            raise ObjectTooLarge(key, None, max_bytes)
        return data

    def _read_with_obstore(
        self,
        reader: ObstoreReader,
        key: str,
        object_key: str,
        etag: str | None,
        max_bytes: int | None,
    ) -> bytes:
        """:meth:`get` through obstore; its failures are botocore's, translated by the caller."""
        try:
            result = reader.get(object_key, etag=etag, max_bytes=max_bytes)
        except ClientError as error:
            if etag is not None and error_code(error) in PRECONDITION_CODES:
                raise ObjectChanged(key, etag) from error
            raise
        if result.data is None:
            raise ObjectTooLarge(key, result.size, max_bytes or 0)
        return result.data

    def put(self, key: str, data: bytes) -> ObjectInfo:
        """Write one object whole (S3 PUTs are atomic) and return its info.

        ``modified`` is the time the server answered (to the second), which may differ from the
        ``LastModified`` a later :meth:`head` reports by a second.

        Raises:
            InvalidKey: the key breaks the key rules.
            StoreUnavailable: missing bucket, refused credentials, unreachable endpoint.
            StorageError: any other failure of the server.
        """
        with self._object_request(key) as (client, object_key):
            response = client.put_object(Bucket=self.bucket, Key=object_key, Body=data)
        self._bucket_seen = True
        return ObjectInfo(
            key=key,
            size=len(data),
            etag=etag_of(response["ETag"]),
            modified=response_time(response["ResponseMetadata"]),
        )

    def exists(self, key: str) -> bool:
        """Return whether the object exists.

        Raises:
            InvalidKey: the key breaks the key rules.
            StoreUnavailable: missing bucket, refused credentials, unreachable endpoint.
            StorageError: any other failure of the server.
        """
        try:
            self.head(key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """Delete one object; a missing key does nothing.

        Raises:
            InvalidKey: the key breaks the key rules.
            StoreUnavailable: missing bucket, refused credentials, unreachable endpoint.
            StorageError: any other failure of the server.
        """
        with self._object_request(key) as (client, object_key):
            client.delete_object(Bucket=self.bucket, Key=object_key)

    def check(self) -> None:
        """Make sure the bucket exists and the credentials may list the store (one request).

        A listing of at most one key under the store's prefix, not a HEAD of the bucket: an
        identity allowed only into its prefix may be refused the bucket itself.

        Raises:
            StoreUnavailable: missing bucket, refused or missing credentials, unreachable
                endpoint, unusable AWS configuration.
            StorageError: any other failure of the server.
        """
        client = self._client()
        with self._translating_errors(None):
            client.list_objects_v2(Bucket=self.bucket, Prefix=self._root, MaxKeys=1)
        self._bucket_seen = True
        self._readable_at = time.monotonic()

    def _object_key(self, key: str) -> str:
        return self._root + validate_key(key)

    def _walk(
        self, prefix: str, request_size: int, start_after: str | None
    ) -> Iterator[ObjectInfo]:
        client = self._client()
        # S3 starts the listing itself after the key: the objects before it cost no requests.
        after: dict[str, Any] = {"StartAfter": self._root + start_after} if start_after else {}
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket,
            Prefix=self._root + prefix,
            PaginationConfig={"PageSize": request_size},
            **after,
        )
        with self._translating_errors(None):
            for page in pages:
                self._bucket_seen = True
                for item in page.get("Contents", []):
                    key = item["Key"][len(self._root) :]
                    if key.endswith("/"):
                        continue  # a console's "folder" marker, not an object
                    try:
                        validate_key(key)
                    except InvalidKey as error:
                        logger.warning("not listing an object in %s: %s", self.url, error)
                        continue
                    yield ObjectInfo(
                        key=key,
                        size=item["Size"],
                        etag=etag_of(item["ETag"]),
                        modified=item["LastModified"].astimezone(UTC),
                    )

    def _client(self) -> S3Client:
        client = self._s3
        if client is None:
            with self._client_lock:
                if self._s3 is None:
                    self._s3, self._obstore = make_clients(
                        self.bucket,
                        self.reader,
                        connect_timeout=self.connect_timeout,
                        read_timeout=self.read_timeout,
                    )
                client = self._s3
        return client

    @contextmanager
    def _object_request(self, key: str) -> Iterator[tuple[S3Client, str]]:
        """Yield the client and the bucket key of ``key``; translate botocore errors as for it.

        Raises:
            InvalidKey: the key breaks the key rules (raised on entering the block).
        """
        object_key = self._object_key(key)
        client = self._client()
        with self._translating_errors(key):
            yield client, object_key

    @contextmanager
    def _translating_errors(self, key: str | None) -> Iterator[None]:
        """Raise a botocore error of the block as :meth:`_error` translates it for ``key``.

        ``key`` is the object the block asks about, or None for the bucket or a listing.
        """
        started = time.monotonic()
        try:
            yield
        except _BOTO_ERRORS as error:
            raise self._error(error, key, started) from error

    def _endpoint(self) -> str:
        return self._s3.meta.endpoint_url if self._s3 is not None else "the configured endpoint"

    def _error(self, error: Exception, key: str | None, started: float) -> StorageError:
        return request_error(
            error,
            key,
            bucket=self.bucket,
            endpoint=self._endpoint(),
            url=self.url,
            outage=lambda: self._outage(since=started),
        )

    def _outage(self, *, since: float) -> StorageError | None:
        """Why the store cannot be listed now, or None. A listing that succeeded after
        ``since`` (the failed request's start) answers for it: concurrent readers that meet
        missing or refused objects together ask once."""
        if self._readable_at >= since:
            return None
        try:
            self.check()
        except StorageError as outage:
            return outage
        return None


def _rebuild(
    bucket: str, prefix: str, connect_timeout: float, read_timeout: float, reader: S3Reader
) -> S3Store:
    return S3Store(
        bucket, prefix, connect_timeout=connect_timeout, read_timeout=read_timeout, reader=reader
    )
