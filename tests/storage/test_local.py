"""What only the local-folder store does: atomic writes, its folder, symbolic links."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from mlc_core.errors import (
    InvalidKey,
    ObjectNotFound,
    ObjectUnreadable,
    StorageError,
    StoreUnavailable,
)
from mlc_core.storage import LocalStore
from mlc_core.storage.local import TEMP_PREFIX


def files_below(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if not path.is_dir())


def test_check_creates_a_missing_root_folder(tmp_path: Path) -> None:
    LocalStore(tmp_path / "a" / "store").check()
    assert (tmp_path / "a" / "store").is_dir()


def test_check_on_a_root_that_is_a_file_says_it_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("not a folder")
    with pytest.raises(StoreUnavailable, match=r"store root .*/store is not a folder"):
        LocalStore(tmp_path / "store").check()


def test_listing_a_root_that_is_a_file_says_it_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("not a folder")
    with pytest.raises(StoreUnavailable, match="is not a folder"):
        list(LocalStore(tmp_path / "store").iter_objects())


def test_writing_into_a_root_that_is_a_file_says_it_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("not a folder")
    with pytest.raises(StoreUnavailable, match="is not a folder"):
        LocalStore(tmp_path / "store").put("a.txt", b"x")


def test_listing_a_missing_root_yields_nothing(tmp_path: Path) -> None:
    assert list(LocalStore(tmp_path / "missing").list_pages()) == []


def test_put_creates_the_folders_of_the_key(tmp_path: Path) -> None:
    LocalStore(tmp_path).put("images/2024/a b/ü.jpg", b"x")
    assert (tmp_path / "images" / "2024" / "a b" / "ü.jpg").read_bytes() == b"x"


def test_put_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for round_ in range(3):
        store.put("images/1.jpg", f"version {round_}".encode())
        store.put("labels.csv", b"image,tags\n")
    assert files_below(tmp_path) == ["images/1.jpg", "labels.csv"]


def test_concurrent_writers_of_one_key_leave_one_complete_version(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    # Big enough that a non-atomic write would be seen half done by another writer.
    versions = [bytes([writer]) * 300_000 for writer in range(8)]
    start = threading.Barrier(len(versions))

    def write(data: bytes) -> None:
        start.wait()
        for _ in range(5):
            store.put("model.keras", data)

    threads = [threading.Thread(target=write, args=(data,)) for data in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get("model.keras") in versions
    assert files_below(tmp_path) == ["model.keras"]


def test_readers_during_writes_see_only_complete_versions(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    versions = [bytes([writer]) * 300_000 for writer in range(2)]
    store.put("model.keras", versions[0])
    done = threading.Event()

    def write() -> None:
        for round_ in range(20):
            store.put("model.keras", versions[round_ % 2])
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen = []
    while not done.is_set():
        seen.append(store.get("model.keras"))
    writer.join()
    assert all(data in versions for data in seen)


def test_listing_shows_files_and_links_to_files_only(tmp_path: Path) -> None:
    root = tmp_path / "store"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    store = LocalStore(root)
    store.put("images/1.jpg", b"x")
    (root / "images" / f"{TEMP_PREFIX}0123456789abcdef").write_bytes(b"half a write")
    (root / "images" / "link-to-file.jpg").symlink_to(outside / "secret.txt")
    (root / "link-to-folder").symlink_to(outside, target_is_directory=True)
    os.mkfifo(root / "images" / "pipe")
    (root / "empty-folder").mkdir()
    # A link to a file is listed so that reading it can be refused and recorded; a link to a
    # folder is never walked into.
    assert [info.key for info in store.iter_objects()] == [
        "images/1.jpg",
        "images/link-to-file.jpg",
    ]


def test_listing_below_a_symlinked_folder_yields_nothing(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "link").symlink_to(outside, target_is_directory=True)
    assert list(LocalStore(tmp_path / "store").iter_objects("link/")) == []


def test_reading_through_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "link").symlink_to(outside, target_is_directory=True)
    (tmp_path / "store" / "file-link.txt").symlink_to(outside / "secret.txt")
    store = LocalStore(tmp_path / "store")
    with pytest.raises(ObjectUnreadable, match="symbolic link"):
        store.get("link/secret.txt")
    with pytest.raises(ObjectUnreadable, match="symbolic link"):
        store.get("file-link.txt")


def test_a_link_inside_the_store_is_not_followed_either(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put("images/real.jpg", b"x")
    (tmp_path / "store" / "images" / "alias.jpg").symlink_to(tmp_path / "store/images/real.jpg")
    # Checked and opened in one step, a link cannot be swapped in between the two.
    with pytest.raises(ObjectUnreadable, match="symbolic link"):
        store.get("images/alias.jpg")


def test_writing_through_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidKey, match="leads out of"):
        LocalStore(tmp_path / "store").put("link/new/file.txt", b"x")
    assert list(outside.iterdir()) == []


def test_a_root_that_is_itself_a_symlink_works(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "store").symlink_to(tmp_path / "real", target_is_directory=True)
    store = LocalStore(tmp_path / "store")
    store.put("images/1.jpg", b"x")
    assert (store.get("images/1.jpg"), [i.key for i in store.iter_objects()]) == (
        b"x",
        ["images/1.jpg"],
    )


def test_keys_named_like_temporary_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidKey, match="reserved"):
        LocalStore(tmp_path).put(f"images/{TEMP_PREFIX}x", b"x")


def test_writing_below_a_key_that_is_a_file_fails_clearly(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("images", b"a file")
    with pytest.raises(StorageError, match="a part of its folder path is a file"):
        store.put("images/1.jpg", b"x")


def test_writing_a_key_that_is_a_folder_of_other_keys_fails_clearly(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("images/1.jpg", b"x")
    with pytest.raises(StorageError, match="a folder of that name holds other keys"):
        store.put("images", b"a file")


def test_a_fifo_is_not_an_object(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ObjectNotFound):
        LocalStore(tmp_path).get("pipe")


def test_uri_is_an_unencoded_file_url_below_the_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert store.url == str(tmp_path)
    assert store.uri("images/a b/ü.jpg") == f"file://{tmp_path}/images/a b/ü.jpg"


def test_reading_from_a_store_whose_folder_is_gone_is_an_outage_not_a_missing_object(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "share")
    store.put("images/a.jpg", b"x")
    (tmp_path / "share").rename(tmp_path / "unmounted")

    # An unmounted share must not look like every image was deleted.
    with pytest.raises(StoreUnavailable, match="does not exist"):
        store.get("images/a.jpg")
