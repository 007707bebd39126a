"""Discovery: what the store holds now, registered in the database; what it lost, retired.

Discovery streams the listing of each prefix page by page and registers every image object
(kept by extension here, by magic bytes when it is decoded) as an (uri, etag) row. A new etag
is a new row. Keys come in byte order, so each page covers a range of keys (after the
previous page's last, up to its own last); the page is compared with the registered rows of
that range in one read, and the current images of the range it did not show are marked with
the listing's start (:mod:`mlc_core.db.unlisted`). A night with nothing new or gone writes
no row.

A listing that ran to its end over the whole prefix then retires the current images
registered under the prefix that it did not show: the marked ones and those after its last
key. Their objects are gone. Never when the listing failed or
passed over folders it could not read, never when it came back empty while images were known
(an unreachable or mistyped store looks just like that), and never more than
``MLC_SCORING__MAX_RETIRE_FRACTION`` of the prefix's known images at once (then nothing is
retired and the run's report says why) unless the caller forces it. A listing that covers
only part of a prefix (``since``: the keys after a start key) never retires anything.

A store that lists some keys out of byte order (SeaweedFS lists "a/x" before "a-b") still
retires exactly what it did not show: a key shown after a later one takes back the mark an
earlier page put on it, at the cost of a lookup of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from mlc_core.db.engine import database_now
from mlc_core.db.images import ImageRecord, find_image_versions, register_images
from mlc_core.db.unlisted import (
    clear_unlisted,
    count_gone,
    count_known,
    mark_unlisted,
    retire_gone,
    versions_in_range,
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


@dataclass
class _Coverage:
    """How far one listing has shown its prefix, in byte order of the URIs.

    Attributes:
        marking: the listing covers the whole prefix, so what its pages miss is marked.
        shown_up_to: the greatest URI shown so far (for a listing after a start key, that
            key's URI to begin with); the next page covers the range after it.
        marked: versions marked as not shown.
        late: image keys shown after a key that sorts later (a store that does not list in
            byte order); each costs a lookup of its own.
    """

    uri_prefix: str
    started: datetime
    marking: bool
    shown_up_to: str | None
    marked: int = 0
    late: int = 0


def _discover_prefix(
    workspace: Workspace, prefix: str, *, force_retire: bool, since: str | None
) -> _PrefixTally:
    store = workspace.store
    tally = _PrefixTally()
    with workspace.transaction() as session:
        started = database_now(session)
    coverage = _Coverage(
        uri_prefix=store.root_uri + prefix,
        started=started,
        marking=since is None,
        shown_up_to=None if since is None else store.root_uri + since,
    )
    listing = (
        store.list_pages(prefix) if since is None else store.list_pages(prefix, start_after=since)
    )
    listed_images = 0
    for page in listing:
        tally.listed += len(page)
        images = [info for info in page if has_image_extension(info.key)]
        tally.not_images += len(page) - len(images)
        listed_images += len(images)
        if page:
            tally.new += _compare_page(workspace, page, images, coverage)
    if coverage.late:
        logger.info(
            "the listing of %s under %r showed %d images after keys that sort later (not in "
            "byte order): each was looked up on its own",
            store.url,
            prefix,
            coverage.late,
        )
    if not listing.complete:
        tally.warn(
            f"the listing of {store.url} under {prefix!r} could not read "
            f"{', '.join(listing.unreadable)}; images there were kept as they were and "
            "nothing was retired"
        )
    elif since is None:
        _retire_unlisted(workspace, prefix, coverage, listed_images, tally, force_retire)
    else:
        logger.info("listed %s under %r after %r only: nothing retired", store.url, prefix, since)
    return tally


def _compare_page(
    workspace: Workspace, page: list[ObjectInfo], images: list[ObjectInfo], coverage: _Coverage
) -> int:
    """Register one listing page's images and mark the current images of the key range it
    covers that it did not show; returns how many versions were new.

    On a night with nothing new or gone that is one range read and no write.
    """
    root = workspace.store.root_uri
    records = [ImageRecord(root + info.key, info.etag, info.size, info.modified) for info in images]
    after, top = coverage.shown_up_to, root + max(info.key for info in page)
    late = [record for record in records if after is not None and record.uri <= after]
    if not coverage.marking and not records:
        coverage.shown_up_to = top if after is None else max(after, top)
        return 0
    with workspace.transaction() as session:
        current: dict[tuple[str, str], bool] = {}
        missed: list[int] = []
        if after is None or top > after:
            in_range = versions_in_range(session, coverage.uri_prefix, after, top, coverage.started)
            current = {(version.uri, version.etag): version.current for version in in_range}
            shown = {record.uri for record in records}
            missed = [
                version.id
                for version in in_range
                if version.current and version.known_before and version.uri not in shown
            ]
        if late:
            found = find_image_versions(session, [(record.uri, record.etag) for record in late])
            current.update({pair: version.current for pair, version in found.items()})
            if coverage.marking:
                clear_unlisted(session, [record.uri for record in late], coverage.started)
        if not all(current.get((record.uri, record.etag), False) for record in records):
            register_images(session, records)
        if coverage.marking and missed:
            mark_unlisted(session, missed, coverage.started)
    coverage.shown_up_to = top if after is None else max(after, top)
    coverage.marked += len(missed) if coverage.marking else 0
    coverage.late += len(late)
    return sum((record.uri, record.etag) not in current for record in records)


def _retire_unlisted(
    workspace: Workspace,
    prefix: str,
    coverage: _Coverage,
    listed_images: int,
    tally: _PrefixTally,
    force: bool,
) -> None:
    store = workspace.store
    uri_prefix, started, shown_up_to = coverage.uri_prefix, coverage.started, coverage.shown_up_to
    marked = coverage.marked > 0
    with workspace.transaction() as session:
        unlisted = count_gone(session, uri_prefix, started, shown_up_to, marked=marked)
        if not unlisted:
            return
        known = count_known(session, uri_prefix, started)
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
        tally.retired += retire_gone(session, uri_prefix, started, shown_up_to, marked=marked)
