"""open_store: from a URL to a backend, without any I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlc_core.errors import StoreUnavailable
from mlc_core.storage import LocalStore, S3Store, open_store


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket/some/prefix", "s3://bucket/some/prefix"),
        ("s3://bucket/some/prefix/", "s3://bucket/some/prefix"),
        ("s3://bucket", "s3://bucket"),
        ("s3://bucket/", "s3://bucket"),
    ],
)
def test_an_s3_url_opens_an_s3_store_with_that_url(url: str, expected: str) -> None:
    store = open_store(url)
    assert isinstance(store, S3Store)
    assert store.url == expected


def test_an_s3_store_names_objects_by_bucket_prefix_and_key_unencoded() -> None:
    assert (
        open_store("s3://bucket/pre").uri("images/a b/ü.jpg") == "s3://bucket/pre/images/a b/ü.jpg"
    )


def test_an_s3_store_without_prefix_names_objects_by_bucket_and_key() -> None:
    assert open_store("s3://bucket").uri("images/1.jpg") == "s3://bucket/images/1.jpg"


def test_opening_an_s3_store_does_no_network_io(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    store = open_store("s3://bucket/prefix")
    assert store.uri("k") == "s3://bucket/prefix/k"


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix"])
def test_an_s3_url_without_bucket_is_refused(url: str) -> None:
    with pytest.raises(StoreUnavailable, match="has no bucket name"):
        open_store(url)


def test_an_s3_url_with_a_bad_prefix_is_refused() -> None:
    with pytest.raises(StoreUnavailable, match="bad prefix"):
        open_store("s3://bucket/a/../../b")


def test_an_s3_url_with_an_invalid_bucket_name_is_refused() -> None:
    with pytest.raises(StoreUnavailable, match="not a valid S3 bucket name"):
        open_store("s3://bad:bucket/x")


@pytest.mark.parametrize("url", ["gs://bucket/x", "http://host/x"])
def test_an_unknown_scheme_is_refused_naming_it(url: str) -> None:
    with pytest.raises(StoreUnavailable, match="unknown scheme"):
        open_store(url)


def test_an_empty_url_is_refused() -> None:
    with pytest.raises(StoreUnavailable, match="empty"):
        open_store("")


@pytest.mark.parametrize("prefix", ["file://", "file://localhost"])
def test_a_file_url_opens_a_local_store_at_that_folder(tmp_path: Path, prefix: str) -> None:
    store = open_store(f"{prefix}{tmp_path}/my store")
    assert isinstance(store, LocalStore)
    assert store.url == f"{tmp_path}/my store"


def test_a_file_url_naming_another_host_is_refused() -> None:
    with pytest.raises(StoreUnavailable, match="must be local"):
        open_store("file://server/share")


def test_a_relative_file_url_is_refused() -> None:
    with pytest.raises(StoreUnavailable, match="not an absolute path"):
        open_store("file:relative/folder")


def test_a_plain_relative_path_opens_a_local_store_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("data/store")
    assert store.url == str(tmp_path / "data" / "store")


def test_opening_a_local_store_does_not_create_its_folder(tmp_path: Path) -> None:
    open_store(str(tmp_path / "store"))
    assert not (tmp_path / "store").exists()
