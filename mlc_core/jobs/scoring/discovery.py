"""Discovery: what the store holds now, registered in the database; what it lost, retired.

Discovery streams the listing of each prefix page by page and registers every image object
(kept by extension here, by magic bytes when it is decoded) as an (uri, etag) row, marking each
listed version with the listing's start. A new etag is a new row.

A listing that ran to its end over the whole prefix then retires the current images registered
under the prefix that it did not show: their objects are gone. Never when the listing failed or
passed over folders it could not read, never when it came back empty while images were known
(an unreachable or mistyped store looks just like that), and never more than
``MLC_SCORING__MAX_RETIRE_FRACTION`` of the prefix's known images at once (then nothing is
retired and the run's report says why) unless the caller forces it. A listing that covers
only part of a prefix (``since``: the keys after a start key) never retires anything.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from mlc_core.db.engine import database_now
from mlc_core.db.images import (
    ImageRecord,
    count_unlisted,
    find_image_versions,
    mark_listed,
    register_images,
    retire_unlisted,
)
from mlc_core.images import has_image_extension
from mlc_core.jobs.scoring.reports import ScoreReport
from mlc_core.jobs.workspace import Workspace
from mlc_core.storage import ObjectInfo

logger = logging.getLogger(__name__)

NOT_AN_IMAGE_TYPE = "not_an_image_type"


def discover_images(
    workspace: Workspace,
    prefixes: Sequence[str],
    report: ScoreReport,
    *,
    force_retire: bool = False,
    since: str | None = None,
    listing_workers: int | None = None,
) -> None:
    """Register every image object under ``prefixes`` and retire the ones that are gone.

    Objects whose name has no image extension are counted as skipped. What the listings
    decided not to retire, and why, is noted in ``report.warnings``. Several prefixes are
    listed side by side, ``listing_workers`` at a time: on S3 each listing waits on one
    request per 1,000 keys, so the waits overlap.

    Args:
        force_retire: retire whatever a complete listing did not show, beyond the fraction.
        since: list only the keys that sort after this one (for stores where new images land
            under dated prefixes). Such a listing covers part of each prefix, so it never
            retires anything.
        listing_workers: prefixes listed at a time; default
            ``MLC_SCORING__LISTING_WORKERS``.

    Raises:
        StorageError: a listing failed; the pages registered before stay registered, and
            nothing is retired under that prefix.
    """
    workers = listing_workers or workspace.settings.scoring.listing_workers
    tally = partial(_discover_prefix, workspace, force_retire=force_retire, since=since)
    if len(prefixes) <= 1 or workers <= 1:
        results = [tally(prefix) for prefix in prefixes]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlc-list") as pool:
            # map re-raises the first failure once every listing has ended.
            results = list(pool.map(tally, prefixes))
    for result in results:
        result.add_to(report)


@dataclass
class _PrefixTally:
    """What one prefix's listing counted, merged into the run's report afterwards."""

    listed: int = 0
    new: int = 0
    not_images: int = 0
    retired: int = 0
    retire_refused: int = 0
    warnings: list[str] = field(default_factory=list)

    def add_to(self, report: ScoreReport) -> None:
        report.listed += self.listed
        report.new += self.new
        if self.not_images:
            report.skip(NOT_AN_IMAGE_TYPE, self.not_images)
        report.retired += self.retired
        report.retire_refused += self.retire_refused
        report.warnings.extend(self.warnings)

    def warn(self, warning: str) -> None:
        logger.warning(warning)
        self.warnings.append(warning)


def _discover_prefix(
    workspace: Workspace, prefix: str, *, force_retire: bool, since: str | None
) -> _PrefixTally:
    store = workspace.store
    tally = _PrefixTally()
    with workspace.transaction() as session:
        started = database_now(session)
    listing = (
        store.list_pages(prefix) if since is None else store.list_pages(prefix, start_after=since)
    )
    listed_images = 0
    for page in listing:
        tally.listed += len(page)
        images = [info for info in page if has_image_extension(info.key)]
        tally.not_images += len(page) - len(images)
        if images:
            listed_images += len(images)
            tally.new += _register_page(workspace, images, started)
    if not listing.complete:
        tally.warn(
            f"the listing of {store.url} under {prefix!r} could not read "
            f"{', '.join(listing.unreadable)}; images there were kept as they were and "
            "nothing was retired"
        )
    elif since is None:
        _retire_unlisted(workspace, prefix, started, listed_images, tally, force_retire)
    else:
        logger.info("listed %s under %r after %r only: nothing retired", store.url, prefix, since)
    return tally


def _register_page(workspace: Workspace, images: list[ObjectInfo], started: datetime) -> int:
    """Register one listing page's images; returns how many versions were new."""
    store = workspace.store
    records = [
        ImageRecord(store.uri(info.key), info.etag, info.size, info.modified) for info in images
    ]
    with workspace.transaction() as session:
        known = find_image_versions(session, [(r.uri, r.etag) for r in records])
        # A nightly listing is mostly known, current images: only their marks change.
        if len(known) < len(records) or not all(version.current for version in known.values()):
            register_images(session, records, listed_at=started)
        else:
            mark_listed(session, [version.id for version in known.values()], started)
    return len(records) - len(known)


def _retire_unlisted(
    workspace: Workspace,
    prefix: str,
    started: datetime,
    listed_images: int,
    tally: _PrefixTally,
    force: bool,
) -> None:
    store = workspace.store
    uri_prefix = store.root_uri + prefix
    with workspace.transaction() as session:
        unlisted, known = count_unlisted(session, uri_prefix, started)
        if not unlisted:
            return
        where = f"{store.url} under {prefix!r}"
        if listed_images == 0:
            tally.warn(
                f"the listing of {where} has no images although {known} were registered there "
                "before; nothing was retired (check the store URL and the prefix)",
            )
            return
        limit = workspace.settings.scoring.max_retire_fraction
        if unlisted > limit * known and not force:
            tally.retire_refused += unlisted
            tally.warn(
                f"{unlisted} of the {known} images known under {where} were not in its "
                f"listing, more than MLC_SCORING__MAX_RETIRE_FRACTION ({limit:g}); none was "
                "retired (check the store URL and the prefix, or retire them with "
                "`mlc score --force-retire`)",
            )
            return
        tally.retired += retire_unlisted(session, uri_prefix, started)
