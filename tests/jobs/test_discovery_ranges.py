"""Discovery compares each listing page with the registered images of the key range it covers:
what a complete listing did not show is retired wherever it sat in the prefix, a store that
lists out of byte order retires exactly the same, and a night with nothing new or gone writes
no row."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from mlc_core.jobs.scoring.discovery import discover_images
from mlc_core.jobs.scoring.reports import ScoreReport
from mlc_core.jobs.workspace import Workspace
from mlc_core.storage.base import Listing, ObjectInfo
from tests.jobs.scoring_support import (
    migrate,
    opened,
    put_tiny_images,
    query,
    server_settings,
)

PAGE = 3


class _Paged:
    """The workspace's store, listed ``page`` keys a page, in the order ``arrange`` gives the
    pages (the store's when it is None), so a few objects make several pages."""

    def __init__(self, store: Any, arrange: Any, page: int) -> None:
        self._store = store
        self._arrange = arrange
        self._page = page

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def list_pages(
        self, prefix: str = "", page_size: int = 1000, *, start_after: str | None = None
    ) -> Listing:
        listing = self._store.list_pages(prefix, self._page, start_after=start_after)
        if self._arrange is None:
            return listing

        def arranged(outer: Listing) -> Iterator[list[ObjectInfo]]:
            pages = list(listing)
            outer.unreadable.extend(listing.unreadable)
            yield from self._arrange(pages)

        return Listing(arranged)


def _discover(
    workspace: Workspace, prefix: str = "images/", arrange: Any = None, page: int = PAGE
) -> ScoreReport:
    store = _Paged(workspace.store, arrange, page)
    paged = Workspace(workspace.settings, workspace.engine, store)
    report = ScoreReport("v1", "new", [prefix])
    discover_images(paged, [prefix], report)
    return report


def _retired_uris(workspace: Workspace) -> list[str]:
    rows = query(workspace, "select uri from images where retired_at is not null order by uri")
    return [uri for (uri,) in rows]


@pytest.mark.parametrize(
    "deleted",
    [[0], [4], [9], [2, 3]],
    ids=["first-key", "middle-of-a-page", "last-key", "across-a-page-boundary"],
)
def test_a_deleted_object_anywhere_in_the_prefix_is_retired(
    each_backend: Workspace, deleted: list[int]
) -> None:
    keys = put_tiny_images(each_backend, 10)
    _discover(each_backend)
    for index in deleted:
        each_backend.store.delete(keys[index])

    report = _discover(each_backend)

    assert (report.listed, report.new, report.retired) == (10 - len(deleted), 0, len(deleted))
    assert _retired_uris(each_backend) == [each_backend.store.uri(keys[i]) for i in deleted]


def test_a_listing_of_one_prefix_retires_nothing_beside_it(each_backend: Workspace) -> None:
    # "images/b-x/" and "images/b.jpg" sort between "images/a/" and "images/b/" in bytes.
    beside = [
        *put_tiny_images(each_backend, 2, "images/a/"),
        *put_tiny_images(each_backend, 2, "images/b-x/"),
        *put_tiny_images(each_backend, 2, "images/c/"),
    ]
    each_backend.store.put("images/b.jpg", each_backend.store.get(beside[0]))
    listed = put_tiny_images(each_backend, 4, "images/b/")
    _discover(each_backend, "images/")
    for key in [*beside, "images/b.jpg", listed[3]]:
        each_backend.store.delete(key)

    report = _discover(each_backend, "images/b/")

    assert (report.listed, report.retired) == (3, 1)
    assert _retired_uris(each_backend) == [each_backend.store.uri(listed[3])]


def _shuffled(pages: list[list[ObjectInfo]]) -> list[list[ObjectInfo]]:
    keys = [info for page in pages for info in page]
    random.Random(5).shuffle(keys)
    return [keys[start : start + PAGE] for start in range(0, len(keys), PAGE)]


@pytest.mark.parametrize(
    "arrange", [lambda pages: reversed(pages), _shuffled], ids=["pages-reversed", "keys-shuffled"]
)
def test_a_listing_out_of_byte_order_retires_exactly_what_it_did_not_show(
    embedded_workspace: Workspace, arrange: Any
) -> None:
    keys = put_tiny_images(embedded_workspace, 10)
    _discover(embedded_workspace)
    for index in (0, 5, 9):
        embedded_workspace.store.delete(keys[index])

    report = _discover(embedded_workspace, arrange=arrange)

    assert (report.listed, report.new, report.retired) == (7, 0, 3)
    assert _retired_uris(embedded_workspace) == [
        embedded_workspace.store.uri(keys[i]) for i in (0, 5, 9)
    ]


def test_keys_a_store_lists_out_of_byte_order_are_retired_only_when_gone(
    each_backend: Workspace,
) -> None:
    # In bytes "a-b" < "a.jpg" < "a/…"; SeaweedFS lists a folder's keys before "a-b". One key
    # a page: the first page's range holds "a-b" and "a.jpg", which later pages show.
    keys = ["images/a-b.jpg", "images/a.jpg", "images/a/x.jpg", "images/a/y.jpg", "images/b.jpg"]
    data = each_backend.store.get(put_tiny_images(each_backend, 1, "seed/")[0])
    for key in keys:
        each_backend.store.put(key, data)
    _discover(each_backend, page=1)
    each_backend.store.delete("images/a/y.jpg")

    report = _discover(each_backend, page=1)

    assert (report.listed, report.retired) == (4, 1)
    assert _retired_uris(each_backend) == [each_backend.store.uri("images/a/y.jpg")]


@pytest.fixture
def writes(each_backend: Workspace) -> Iterator[list[str]]:
    """The INSERT, UPDATE and DELETE statements run on the workspace's database meanwhile."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}:
            statements.append(statement)

    event.listen(each_backend.engine, "before_cursor_execute", record)
    yield statements
    event.remove(each_backend.engine, "before_cursor_execute", record)


def test_a_listing_with_nothing_new_or_gone_writes_no_row(
    each_backend: Workspace, writes: list[str]
) -> None:
    put_tiny_images(each_backend, 10)
    _discover(each_backend)
    before = query(each_backend, "select * from images order by id")
    writes.clear()

    report = _discover(each_backend)

    assert (report.listed, report.new, report.retired) == (10, 0, 0)
    assert writes == []
    assert query(each_backend, "select * from images order by id") == before


def test_a_listing_with_one_object_gone_writes_only_that_row(
    each_backend: Workspace, writes: list[str]
) -> None:
    keys = put_tiny_images(each_backend, 10)
    _discover(each_backend)
    each_backend.store.delete(keys[4])
    before = query(each_backend, "select * from images order by id")
    writes.clear()

    report = _discover(each_backend)

    after = query(each_backend, "select * from images order by id")
    changed = [row[1] for row, old in zip(after, before, strict=True) if row != old]
    assert report.retired == 1 and changed == [each_backend.store.uri(keys[4])]
    # One statement marks it as not shown by its page, one retires it (the rest of the writes
    # are its shown tags, removed).
    on_images = [s for s in writes if s.split(None, 3)[:2] == ["UPDATE", "images"]]
    assert len(on_images) == 2
    assert all("images" not in s.split(None, 3)[:3] for s in writes if s not in on_images)


def test_keys_a_language_locale_orders_differently_are_compared_in_byte_order(
    postgres_locale_url: str, isolated_mlc_environment: Path
) -> None:
    migrate(postgres_locale_url)
    store = str(isolated_mlc_environment / "store")
    settings = server_settings(isolated_mlc_environment, postgres_locale_url, store)
    # Byte order; the database's own order puts "a" before "B" and "photo-10" after "photo_2".
    keys = ["images/B.jpg", "images/a.jpg", "images/photo-10.jpg", "images/photo_2.jpg"]
    with opened(settings) as workspace:
        data = workspace.store.get(put_tiny_images(workspace, 1, "seed/")[0])
        for key in keys:
            workspace.store.put(key, data)
        _discover(workspace, page=1)
        workspace.store.delete("images/photo-10.jpg")

        report = _discover(workspace, page=1)

        assert (report.listed, report.retired) == (3, 1)
        assert _retired_uris(workspace) == [workspace.store.uri("images/photo-10.jpg")]
