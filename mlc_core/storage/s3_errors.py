"""How an S3 server's errors read to mlc: every botocore error becomes one of the
``StorageError`` tree, with a sentence a user can act on."""

from __future__ import annotations

from collections.abc import Callable

from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    UnknownCredentialError,
)
from botocore.exceptions import ConnectionError as EndpointUnreachable

from mlc_core.errors import ObjectNotFound, ObjectUnreadable, StorageError, StoreUnavailable

MISSING_BUCKET_CODES = {"NoSuchBucket"}
PRECONDITION_CODES = {"PreconditionFailed", "412"}
# Refusals that can only mean the credentials, never one object.
CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "InvalidClientTokenId",
}
MISSING_CODES = {"NoSuchKey", "NotFound", "404"}
REFUSED_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "InvalidClientTokenId",
    "Forbidden",
    "403",
}


def translate_s3_error(
    error: Exception, key: str | None, *, bucket: str, endpoint: str, url: str
) -> StorageError:
    """The error a user can act on for a botocore ``error`` of a request about ``key``
    (None: the bucket or a listing) to ``bucket`` at ``endpoint`` (the store ``url``)."""
    code = error_code(error)
    if key is not None and (unreadable := _unreadable_object(error, code)):
        return ObjectUnreadable(key, unreadable)
    if code in MISSING_BUCKET_CODES or (key is None and code in MISSING_CODES):
        return StoreUnavailable(
            f"S3 bucket '{bucket}' does not exist at endpoint {endpoint}; "
            f"create it or fix the bucket in the store URL {url}"
        )
    if code in MISSING_CODES and key is not None:
        return ObjectNotFound(key, url)
    if code in REFUSED_CODES or status_code(error) == 403:
        return StoreUnavailable(
            f"S3 endpoint {endpoint} refused access to bucket '{bucket}' ({code}); "
            "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the "
            "bucket's permissions"
        )
    if isinstance(
        error,
        NoCredentialsError
        | PartialCredentialsError
        | CredentialRetrievalError
        | UnknownCredentialError,
    ):
        return StoreUnavailable(
            f"no usable AWS credentials for S3 bucket '{bucket}' at endpoint {endpoint} "
            f"({error}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
        )
    if isinstance(error, EndpointUnreachable):
        return StoreUnavailable(
            f"cannot reach S3 endpoint {endpoint} for bucket '{bucket}' ({error}); "
            "check AWS_ENDPOINT_URL and that the server is running"
        )
    what = f"object {key!r}" if key is not None else "the listing"
    if isinstance(error, ClientError):
        message = error.response.get("Error", {}).get("Message", "")
        return StorageError(
            f"S3 request for {what} in bucket '{bucket}' at endpoint {endpoint} failed "
            f"with {code}: {message}"
        )
    return StorageError(
        f"S3 request for {what} in bucket '{bucket}' at endpoint {endpoint} failed: {error}"
    )


def _unreadable_object(error: Exception, code: str) -> str | None:
    """Why one object can never be read as it is, if the error says so."""
    if code == "InvalidObjectState":
        return (
            "archived: restore it from its storage class before it can be read (InvalidObjectState)"
        )
    message = (
        error.response.get("Error", {}).get("Message", "") if isinstance(error, ClientError) else ""
    )
    if code.startswith("KMS") or "KMS" in message:
        return f"encrypted: with a KMS key this identity may not use ({code}: {message})"
    return None


def is_refusal(error: Exception) -> bool:
    """A 403 that may concern one object (not one that can only mean the credentials)."""
    code = error_code(error)
    if code in CREDENTIAL_CODES:
        return False
    return code in {"AccessDenied", "Forbidden", "403"} or status_code(error) == 403


def error_code(error: Exception) -> str:
    if not isinstance(error, ClientError):
        return ""
    return str(error.response.get("Error", {}).get("Code", ""))


def status_code(error: Exception) -> int | None:
    if not isinstance(error, ClientError):
        return None
    return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def request_error(
    error: Exception,
    key: str | None,
    *,
    bucket: str,
    endpoint: str,
    url: str,
    outage: Callable[[], StorageError | None],
) -> StorageError:
    """Translate a boto3 error into the one-sentence error a user can act on.

    A request about one object that is refused, or finds no object, while the store can still
    be listed concerns that object; when the store cannot be listed either (``outage`` says
    why), it is the store's outage (a server may report a deleted bucket as a missing key),
    never a reason to record or retire the object.
    """
    translated = translate_s3_error(error, key, bucket=bucket, endpoint=endpoint, url=url)
    concerns_one_object = isinstance(translated, ObjectNotFound) or is_refusal(error)
    if key is None or isinstance(translated, ObjectUnreadable) or not concerns_one_object:
        return translated
    down = outage()
    if down is not None:
        return down
    if isinstance(translated, ObjectNotFound):
        return translated
    return ObjectUnreadable(
        key,
        f"access denied: this identity may list the store but not read it "
        f"({error_code(error) or 403})",
    )
