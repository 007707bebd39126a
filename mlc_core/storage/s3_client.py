"""The boto3 client mlc's S3 store uses, and how it reads S3's responses.

The client follows boto3's standard chain for endpoint, region and credentials; these settings
decide only how patiently it waits and retries, and how fast it parses timestamps.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.session
import botocore.utils
from botocore.exceptions import BotoCoreError

from mlc_core.errors import StoreUnavailable
from mlc_core.storage.s3_reads import ObstoreReader, obstore_reader_for

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Per attempt. A refused connection fails all attempts in about a second or two; an endpoint
# that never answers the handshake in about 5 x 3 s plus backoff. The read timeout is per
# socket read, not per object, so large objects are not cut short by it.
CONNECT_TIMEOUT_SECONDS = 3.0
READ_TIMEOUT_SECONDS = 30.0
# Standard mode retries throttling, 5xx and connection errors with jittered backoff; five
# attempts ride out a server hiccup without turning an outage into minutes of waiting.
MAX_ATTEMPTS = 5
# Enough for the scoring readers (16 by default) with room for a larger read_workers setting.
MAX_POOL_CONNECTIONS = 64


def make_clients(
    bucket: str, reader: str, *, connect_timeout: float, read_timeout: float
) -> tuple[S3Client, ObstoreReader | None]:
    """The boto3 client, and the obstore reader with the settings it resolved (or None:
    boto3 reads, as ``reader`` asks or where obstore cannot follow the AWS configuration)."""
    session = botocore.session.get_session()
    client = make_s3_client(
        session, bucket, connect_timeout=connect_timeout, read_timeout=read_timeout
    )
    if reader != "obstore":
        return client, None
    try:
        return client, obstore_reader_for(
            client,
            session,
            bucket,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=MAX_ATTEMPTS,
        )
    except BotoCoreError:
        # No usable credentials yet: boto3 reads, and raises the same error at its request.
        return client, None


def make_s3_client(
    session: botocore.session.Session,
    bucket: str,
    *,
    connect_timeout: float,
    read_timeout: float,
) -> S3Client:
    """A client for ``bucket`` from ``session``, or a clear error naming what to check."""
    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        max_pool_connections=MAX_POOL_CONNECTIONS,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        s3={"addressing_style": "path"},
    )
    try:
        session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=parse_timestamp
        )
        return boto3.session.Session(botocore_session=session).client("s3", config=config)
    except (BotoCoreError, ValueError) as error:
        # ValueError: botocore's answer to an AWS_ENDPOINT_URL that is not a URL.
        raise StoreUnavailable(
            f"cannot set up an S3 client for bucket '{bucket}': {error}; "
            "check AWS_ENDPOINT_URL, AWS_PROFILE and the files in ~/.aws"
        ) from error


def parse_timestamp(value: Any) -> datetime:
    """Parse a timestamp of a response as botocore does, quickly in the forms S3 sends.

    botocore's own parser goes through dateutil: about two thirds of the CPU time of listing an
    object (one timestamp each), and some of every GET's. S3 sends ISO 8601 in XML bodies
    ("2024-05-01T12:00:00.000Z") and HTTP dates in headers ("Wed, 01 May 2024 12:00:00 GMT");
    the standard library parses both. Anything else, and a date without a zone (which
    ``parsedate_to_datetime`` would leave naive), goes to botocore's parser.
    """
    if isinstance(value, str):
        try:
            parsed = (
                datetime.fromisoformat(value)
                if value.endswith("Z")
                else parsedate_to_datetime(value)
            )
        except (TypeError, ValueError):
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed
    return botocore.utils.parse_timestamp(value)


def etag_of(value: str) -> str:
    return value.strip('"')


def response_time(metadata: Any) -> datetime:
    date = metadata.get("HTTPHeaders", {}).get("date")
    if date:
        try:
            return parsedate_to_datetime(date).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    return datetime.now(UTC)
