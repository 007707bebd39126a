"""What only the S3 store does, against a real S3 server (SeaweedFS) and real refusals."""

from __future__ import annotations

import hashlib
import pickle
import re
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlc_core.errors import ObjectUnreadable, StoreUnavailable
from mlc_core.storage import S3Store, open_store
from tests.fixtures.s3 import S3Server


def unused_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def missing_bucket_url() -> str:
    return f"s3://mlc-missing-{uuid.uuid4().hex[:12]}/prefix"


def test_a_wrong_secret_key_is_refused_naming_bucket_endpoint_and_variables(
    s3_store_url: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = open_store(s3_store_url)
    with pytest.raises(StoreUnavailable) as caught:
        store.check()
    message = str(caught.value)
    assert store.url.split("/")[2] in message
    assert s3_server.endpoint_url in message
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message


def test_an_unknown_access_key_is_refused_when_reading(
    s3_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_store(s3_store_url).put("a.txt", b"x")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "NOSUCHKEY")
    with pytest.raises(StoreUnavailable, match="InvalidAccessKeyId"):
        open_store(s3_store_url).get("a.txt")


def test_no_credentials_at_all_raise_store_unavailable(
    s3_env: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    with pytest.raises(StoreUnavailable, match="no usable AWS credentials"):
        open_store(f"s3://{s3_env.create_bucket()}/prefix").check()


def test_a_missing_bucket_fails_check_naming_bucket_and_endpoint(s3_env: S3Server) -> None:
    url = missing_bucket_url()
    bucket = url.split("/")[2]
    expected = f"S3 bucket '{bucket}' does not exist at endpoint {s3_env.endpoint_url}"
    with pytest.raises(StoreUnavailable, match=re.escape(expected)):
        open_store(url).check()


def test_exists_in_a_missing_bucket_raises_store_unavailable_not_false(s3_env: S3Server) -> None:
    with pytest.raises(StoreUnavailable, match="does not exist"):
        open_store(missing_bucket_url()).exists("a.txt")


def test_listing_a_missing_bucket_raises_store_unavailable(s3_env: S3Server) -> None:
    with pytest.raises(StoreUnavailable, match="does not exist"):
        list(open_store(missing_bucket_url()).list_pages())


def test_writing_to_a_missing_bucket_raises_store_unavailable(s3_env: S3Server) -> None:
    with pytest.raises(StoreUnavailable, match="does not exist"):
        open_store(missing_bucket_url()).put("a.txt", b"x")


def test_an_unreachable_endpoint_raises_store_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{unused_loopback_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "any")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "any")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    with pytest.raises(StoreUnavailable, match=re.escape(f"cannot reach S3 endpoint {endpoint}")):
        open_store("s3://bucket/prefix").check()


def test_a_malformed_endpoint_url_raises_store_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "not a url")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    with pytest.raises(StoreUnavailable, match="AWS_ENDPOINT_URL"):
        open_store("s3://bucket/prefix").check()


def test_a_store_does_not_see_the_keys_of_a_sibling_prefix(s3_env: S3Server) -> None:
    bucket = s3_env.create_bucket()
    open_store(f"s3://{bucket}/p10").put("a.txt", b"x")
    open_store(f"s3://{bucket}/p1").put("b.txt", b"x")
    assert [info.key for info in open_store(f"s3://{bucket}/p1").iter_objects()] == ["b.txt"]


def test_a_store_on_a_whole_bucket_sees_keys_under_every_prefix(s3_env: S3Server) -> None:
    bucket = s3_env.create_bucket()
    open_store(f"s3://{bucket}/p1").put("b.txt", b"x")
    assert [info.key for info in open_store(f"s3://{bucket}").iter_objects()] == ["p1/b.txt"]


def test_objects_land_under_the_prefix_in_the_bucket(s3_store_url: str, s3_env: S3Server) -> None:
    open_store(s3_store_url).put("images/a b.jpg", b"x")
    bucket, prefix = s3_store_url.removeprefix("s3://").split("/", 1)
    listed = s3_env.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listed] == [f"{prefix}/images/a b.jpg"]


def test_listing_leaves_out_folder_markers(s3_store_url: str, s3_env: S3Server) -> None:
    bucket, prefix = s3_store_url.removeprefix("s3://").split("/", 1)
    s3_env.client().put_object(Bucket=bucket, Key=f"{prefix}/images/", Body=b"")
    open_store(s3_store_url).put("images/1.jpg", b"x")
    assert [info.key for info in open_store(s3_store_url).iter_objects()] == ["images/1.jpg"]


def test_etag_is_the_servers_md5_without_quotes(s3_store_url: str) -> None:
    info = open_store(s3_store_url).put("a.txt", b"content")
    assert info.etag == hashlib.md5(b"content").hexdigest()


def test_threads_share_one_store(s3_store_url: str) -> None:
    store = open_store(s3_store_url)
    keys = [f"images/{number}.jpg" for number in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: store.put(key, key.encode()), keys))
        read = list(pool.map(store.get, keys))
    assert read == [key.encode() for key in keys]


def test_a_store_in_use_survives_pickling(s3_store_url: str) -> None:
    store = open_store(s3_store_url)
    store.put("a.txt", b"x")
    copy = pickle.loads(pickle.dumps(store))
    assert (copy.url, copy.get("a.txt")) == (store.url, b"x")


def test_a_listing_longer_than_one_server_page_streams_every_key(s3_store_url: str) -> None:
    store = open_store(s3_store_url)
    assert isinstance(store, S3Store)
    keys = [f"k{number:04d}" for number in range(25)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: store.put(key, b""), keys))
    pages = list(store.list_pages(page_size=10))
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [info.key for page in pages for info in page] == keys


def test_an_object_the_identity_may_not_read_is_unreadable_while_the_store_is_usable(
    limited_s3_store_url: str,
) -> None:
    store = open_store(limited_s3_store_url)
    store.check()  # an identity kept to its prefix may not HEAD the bucket, but may list it
    store.put("images/readable/a.jpg", b"ok")
    store.put("images/secret/b.jpg", b"no")

    assert store.get("images/readable/a.jpg") == b"ok"
    with pytest.raises(ObjectUnreadable, match="access denied"):
        store.get("images/secret/b.jpg")
    assert [info.key for info in store.iter_objects("images/")] == [
        "images/readable/a.jpg",
        "images/secret/b.jpg",
    ]


def test_refused_credentials_stay_a_store_wide_outage_on_an_object_read(
    s3_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_store(s3_store_url).put("images/a.jpg", b"x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")

    with pytest.raises(StoreUnavailable, match="refused access"):
        open_store(s3_store_url).get("images/a.jpg")


@pytest.mark.parametrize(
    ("code", "message", "reason"),
    [
        (
            "InvalidObjectState",
            "The operation is not valid for the object's storage class",
            "archived",
        ),
        (
            "AccessDenied",
            "The ciphertext refers to a customer master key (KMS) that does not exist",
            "KMS",
        ),
        ("KMS.DisabledException", "arn:aws:kms:... is disabled", "KMS"),
    ],
)
def test_archived_and_kms_refused_objects_are_unreadable_objects(
    s3_store_url: str,
    s3_reader: str,
    code: str,
    message: str,
    reason: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from botocore.stub import Stubber

    store = open_store(s3_store_url)
    assert isinstance(store, S3Store)
    if s3_reader == "obstore":
        # The server cannot be made to answer so; obstore is given the answer in the words
        # its errors carry (status line, then the XML body).
        import obstore

        def refused(*_: object, **__: object) -> None:
            raise OSError(
                "Error performing GET http://s3/b/images/archived.jpg in 1ms - Server returned "
                f"non-2xx status code: 403 Forbidden: <Error><Code>{code}</Code>"
                f"<Message>{message}</Message></Error>\n\nDebug source: ..."
            )

        store._client()
        monkeypatch.setattr(obstore, "get", refused)
        with pytest.raises(ObjectUnreadable, match=reason):
            store.get("images/archived.jpg")
        return
    with Stubber(store._client()) as stubber:
        stubber.add_client_error("get_object", code, message, http_status_code=403)
        with pytest.raises(ObjectUnreadable, match=reason):
            store.get("images/archived.jpg")
