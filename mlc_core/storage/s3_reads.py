"""Object reads for the S3 store through obstore (Rust), configured from the boto3 client.

boto3's ``get_object`` spends about a core-millisecond of Python per object (event hooks,
endpoint rules, signing, header parsing); obstore's client does the same request in about a
fifth of that, which matters when scoring reads thousands of small photos a second. Only
single-object reads go through it: listing, writes, deletes and ``check`` stay with boto3,
the interface users configure.

The reader honours exactly what the boto3 client resolved: its endpoint URL and region, the
credentials of its session's standard chain (asked again whenever they near expiry, so
refreshed or assumed-role credentials keep working), path-style addressing, the timeouts and
the attempts; both clients take HTTP(S)_PROXY / NO_PROXY from the environment. Where the AWS
configuration asks for something obstore is not given here (a CA bundle for an https endpoint,
proxies or a client certificate in the botocore config), :func:`obstore_reader_for` returns
None and the store reads with boto3.

Every failure is raised as the botocore error boto3 would have raised for the same answer (a
``ClientError`` with the server's code, message and status, or an ``EndpointConnectionError``),
so the S3 store translates it with the same rules (``s3_errors``) whichever client read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

if TYPE_CHECKING:
    import botocore.session
    from mypy_boto3_s3 import S3Client

# obstore caches credentials until they expire; static ones are asked for again after this.
CREDENTIALS_TTL = timedelta(minutes=5)
_CODE = re.compile(r"<Code>([^<]+)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
_STATUS = re.compile(r"status code: (\d{3})")


@dataclass(frozen=True)
class ReadResult:
    """One object's bytes, or its size when that was over the limit and nothing was read."""

    data: bytes | None
    size: int


class ObstoreReader:
    """GETs of one bucket through obstore, failing with the botocore error of the answer."""

    def __init__(
        self,
        client: S3Client,
        credentials: Any,
        bucket: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_attempts: int,
    ) -> None:
        from obstore.store import S3Store as ObstoreS3Store

        endpoint = client.meta.endpoint_url
        self._endpoint = endpoint
        self._credentials = credentials
        self._store = ObstoreS3Store(
            bucket,
            endpoint=endpoint,
            region=client.meta.region_name or "us-east-1",
            virtual_hosted_style_request=False,
            credential_provider=self._fetch_credentials,  # type: ignore[arg-type]
            client_options={
                "allow_http": endpoint.startswith("http://"),
                "connect_timeout": timedelta(seconds=connect_timeout),
                # obstore has no per-read timeout; a whole GET of a photo gets the read
                # timeout of each of boto3's socket reads several times over.
                "timeout": timedelta(seconds=read_timeout * 4),
            },
            retry_config={
                "max_retries": max_attempts - 1,
                "retry_timeout": timedelta(seconds=read_timeout * max_attempts),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=20),
                    "base": 2,
                },
            },
        )

    def _fetch_credentials(self) -> dict[str, Any]:
        frozen = self._credentials.get_frozen_credentials()
        if frozen.access_key is None or frozen.secret_key is None:
            raise NoCredentialsError()
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": datetime.now(UTC) + CREDENTIALS_TTL,
        }

    def get(self, object_key: str, *, etag: str | None, max_bytes: int | None) -> ReadResult:
        """Read one object (``If-Match: etag`` when given), unless it is over ``max_bytes``.

        Raises:
            ClientError: the server answered with an error (code, message and status as sent).
            EndpointConnectionError: the endpoint could not be reached.
            NoCredentialsError: the chain has no credentials.
        """
        import obstore

        options: dict[str, Any] = {"if_match": f'"{etag}"'} if etag is not None else {}
        try:
            result = obstore.get(self._store, object_key, options=options)  # type: ignore[arg-type]
            size = int(result.meta["size"])
            if max_bytes is not None and size > max_bytes:
                return ReadResult(None, size)
            return ReadResult(bytes(result.bytes()), size)
        except Exception as error:
            raise self._botocore_error(error) from error

    def _botocore_error(self, error: Exception) -> Exception:
        """The botocore error boto3 raises for the answer that ``error`` describes."""
        if isinstance(error, NoCredentialsError):
            return error
        text = str(error).split("\n\nDebug source", 1)[0]
        status = _STATUS.search(text)
        code = _CODE.search(text)
        if status is None and code is None:
            if "error sending request" in text or "connect" in text.lower():
                return EndpointConnectionError(endpoint_url=self._endpoint, error=text)
            return error
        status_code = int(status.group(1)) if status else 500
        message = _MESSAGE.search(text)
        response: Any = {
            "Error": {
                "Code": code.group(1) if code else str(status_code),
                "Message": message.group(1) if message else text,
            },
            "ResponseMetadata": {"HTTPStatusCode": status_code},
        }
        return ClientError(response, "GetObject")


def obstore_reader_for(
    client: S3Client,
    session: botocore.session.Session,
    bucket: str,
    *,
    connect_timeout: float,
    read_timeout: float,
    max_attempts: int,
) -> ObstoreReader | None:
    """An obstore reader with the settings ``client`` (made from ``session``) resolved.

    Returns:
        None when obstore is not installed or the AWS configuration uses what it is not
        given here (a CA bundle for an https endpoint, configured proxies or a client
        certificate): then boto3 reads.

    Raises:
        NoCredentialsError: the session's chain has no credentials.
    """
    try:
        import obstore  # noqa: F401
    except ImportError:
        return None
    https = client.meta.endpoint_url.startswith("https://")
    if https and (os.environ.get("AWS_CA_BUNDLE") or session.get_config_variable("ca_bundle")):
        return None
    config = client.meta.config
    if getattr(config, "proxies", None) or getattr(config, "client_cert", None):
        return None
    # The session caches what its chain found: these are the credentials the client signs with.
    credentials = session.get_credentials()
    if credentials is None:
        raise NoCredentialsError()
    return ObstoreReader(
        client,
        credentials,
        bucket,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_attempts=max_attempts,
    )
