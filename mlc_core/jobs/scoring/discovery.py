"""Discovery: what the store holds now, registered in the database; what it lost, retired.

Discovery streams the listing of each prefix page by page and registers every image object
(kept by extension here, by magic bytes when it is decoded) as an (uri, etag) row, marking each
listed version with the listing's start. A new etag is a new row.

A listing that ran to its end over the whole prefix then retires the current images registered
under the prefix that it did not show: their objects are gone. Never when the listing failed or
passed over folders it could not read, never when it came back empty while images were known
(an unreachable or mistyped store looks just like that), and never more than
``MLC_SCORING__MAX_RETIRE_FRACTION`` of the prefix's known images at once (then nothing is
retired and the run's report says why) unless the caller forces it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

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
) -> None:
    """Register every image object under ``prefixes`` and retire the ones that are gone.

    Objects whose name has no image extension are counted as skipped. What the listings
    decided not to retire, and why, is noted in ``report.warnings``.

    Args:
        force_retire: retire whatever a complete listing did not show, beyond the fraction.

    Raises:
        StorageError: the listing failed; the pages registered before stay registered, and
            nothing is retired.
    """
    store = workspace.store
    for prefix in prefixes:
        with workspace.transaction() as session:
            started = database_now(session)
        listing = store.list_pages(prefix)
        listed_images = 0
        for page in listing:
            report.listed += len(page)
            images = [info for info in page if has_image_extension(info.key)]
            if len(images) < len(page):
                report.skip(NOT_AN_IMAGE_TYPE, len(page) - len(images))
            if images:
                listed_images += len(images)
                report.new += _register_page(workspace, images, started)
        if not listing.complete:
            _warn(
                report,
                f"the listing of {store.url} under {prefix!r} could not read "
                f"{', '.join(listing.unreadable)}; images there were kept as they were and "
                "nothing was retired",
            )
            continue
        _retire_unlisted(workspace, prefix, started, listed_images, report, force_retire)


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
    report: ScoreReport,
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
            _warn(
                report,
                f"the listing of {where} has no images although {known} were registered there "
                "before; nothing was retired (check the store URL and the prefix)",
            )
            return
        limit = workspace.settings.scoring.max_retire_fraction
        if unlisted > limit * known and not force:
            report.retire_refused += unlisted
            _warn(
                report,
                f"{unlisted} of the {known} images known under {where} were not in its "
                f"listing, more than MLC_SCORING__MAX_RETIRE_FRACTION ({limit:g}); none was "
                "retired (check the store URL and the prefix, or retire them with "
                "`mlc score --force-retire`)",
            )
            return
        report.retired += retire_unlisted(session, uri_prefix, started)


def _warn(report: ScoreReport, warning: str) -> None:
    logger.warning(warning)
    report.warnings.append(warning)
