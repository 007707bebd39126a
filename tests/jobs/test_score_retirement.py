"""Deleted objects are retired by a complete listing, and never by one that cannot be trusted:
a listing that fails halfway, comes back empty, or misses more than the allowed fraction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mlc_core.errors import StoreUnavailable
from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.workspace import Workspace
from mlc_core.storage import LocalStore
from mlc_core.storage.base import Listing, ObjectInfo
from tests.jobs.scoring_support import put_tiny_images, query, register_champion

SCORING = {"batch_size": 4, "read_workers": 2}


@pytest.fixture
def scored(embedded_workspace: Workspace) -> tuple[Workspace, list[str]]:
    """Eight images under images/, scored by a champion that tags them all."""
    register_champion(embedded_workspace, thresholds=[0.0001] * 5)
    keys = put_tiny_images(embedded_workspace, 8)
    score_images(embedded_workspace)
    return embedded_workspace, keys


def _current(workspace: Workspace) -> int:
    [(count,)] = query(workspace, "select count(distinct image_uri) from current_tags")
    return int(count)


def _retired(workspace: Workspace) -> int:
    [(count,)] = query(workspace, "select count(*) from images where retired_at is not null")
    return int(count)


class _FailingSecondPage(LocalStore):
    """A local store whose listings fail on their second page, as a server dropping out would."""

    def list_pages(self, prefix: str = "", page_size: int = 1000) -> Listing:
        pages = super().list_pages(prefix, page_size=2)

        def failing(_: Listing) -> Iterator[list[ObjectInfo]]:
            for number, page in enumerate(pages):
                if number == 1:
                    raise StoreUnavailable("the listing failed on its second page")
                yield page

        return Listing(failing)


def test_a_listing_that_fails_on_its_second_page_retires_nothing(
    scored: tuple[Workspace, list[str]],
) -> None:
    workspace, keys = scored
    for key in keys[4:]:
        workspace.store.delete(key)
    failing = Workspace(
        workspace.settings, workspace.engine, _FailingSecondPage(workspace.store.url)
    )

    with pytest.raises(StoreUnavailable, match="second page"):
        score_images(failing)

    assert (_retired(workspace), _current(workspace)) == (0, 8)


def test_a_complete_listing_retires_what_it_did_not_show(
    scored: tuple[Workspace, list[str]],
) -> None:
    workspace, keys = scored
    for key in keys[:3]:
        workspace.store.delete(key)

    report = score_images(workspace)

    assert (report.retired, report.retire_refused, report.warnings) == (3, 0, [])
    assert (_retired(workspace), _current(workspace)) == (3, 5)
    # Retired rows keep their history.
    assert query(workspace, "select count(*) from scores") == [(8,)]


def test_an_empty_listing_while_images_are_known_retires_nothing(
    scored: tuple[Workspace, list[str]],
) -> None:
    workspace, keys = scored
    for key in keys:
        workspace.store.delete(key)

    report = score_images(workspace, force_retire=True)

    assert report.retired == 0 and "nothing was retired" in report.warnings[0]
    assert _current(workspace) == 8


def test_a_listing_missing_more_than_the_fraction_retires_nothing_unless_forced(
    scored: tuple[Workspace, list[str]],
) -> None:
    workspace, keys = scored
    for key in keys[:5]:
        workspace.store.delete(key)

    report = score_images(workspace)

    assert (report.retired, report.retire_refused) == (0, 5)
    assert "5 of the 8 images" in report.warnings[0] and "--force-retire" in report.warnings[0]
    assert _current(workspace) == 8
    forced = score_images(workspace, force_retire=True)
    assert forced.retired == 5 and _current(workspace) == 3


def test_a_restored_object_is_current_again(scored: tuple[Workspace, list[str]]) -> None:
    workspace, keys = scored
    data: dict[str, Any] = {key: workspace.store.get(key) for key in keys[:2]}
    for key in keys[:2]:
        workspace.store.delete(key)
    score_images(workspace)
    for key, content in data.items():
        workspace.store.put(key, content)

    report = score_images(workspace)

    # A local file put back is a new version (a new inode): it is registered and scored.
    assert report.new == 2 and report.scored == 2
    assert _current(workspace) == 8
