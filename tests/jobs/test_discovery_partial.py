"""Discovery that lists only part of a prefix (`since`) registers what it saw and retires
nothing; several prefixes listed side by side register and retire each as if listed alone."""

from __future__ import annotations

from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.scoring.discovery import discover_images
from mlc_core.jobs.scoring.reports import ScoreReport
from mlc_core.jobs.workspace import Workspace
from tests.jobs.scoring_support import put_tiny_images, query, register_champion


def _report(prefixes: list[str]) -> ScoreReport:
    return ScoreReport("v1", "new", prefixes)


def test_a_listing_after_a_start_key_registers_only_later_keys_and_retires_nothing(
    embedded_workspace: Workspace,
) -> None:
    register_champion(embedded_workspace)
    old = put_tiny_images(embedded_workspace, 3, "images/2026-01-01/")
    score_images(embedded_workspace)
    for key in old:
        embedded_workspace.store.delete(key)
    new = put_tiny_images(embedded_workspace, 2, "images/2026-02-01/")

    report = _report(["images/"])
    discover_images(embedded_workspace, ["images/"], report, since="images/2026-02-01/")

    assert (report.listed, report.new, report.retired) == (len(new), len(new), 0)
    assert query(embedded_workspace, "select count(*) from images where retired_at is null") == [
        (5,)
    ]


def test_prefixes_listed_side_by_side_each_register_and_retire_their_own(
    embedded_workspace: Workspace,
) -> None:
    register_champion(embedded_workspace)
    prefixes = [f"images/{month}/" for month in ("01", "02", "03")]
    keys = [key for prefix in prefixes for key in put_tiny_images(embedded_workspace, 4, prefix)]
    first = _report(prefixes)
    discover_images(embedded_workspace, prefixes, first, listing_workers=3)
    embedded_workspace.store.delete(keys[0])

    again = _report(prefixes)
    discover_images(embedded_workspace, prefixes, again, listing_workers=3)

    assert (first.listed, first.new) == (12, 12)
    assert (again.listed, again.new, again.retired) == (11, 0, 1)
