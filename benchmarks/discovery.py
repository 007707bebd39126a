"""Discovery at size (not a test): a nightly no-op listing over many known objects.

Makes ``--objects`` (default 200,000) empty ``.jpg`` files on a local store, in dated folders of
1,000 (``images/2026-01-01/…``, as cameras and uploaders tend to land them), registers them
with a first discovery, then times what a nightly run with nothing new pays:

- the listing alone (the store walked, no database);
- a whole no-op discovery: wall time and this process's CPU per listed object, the database's
  share (statements and their time, from SQLAlchemy's cursor events) and the rows it wrote;
- the same with the images split over one prefix per month, listed ``--workers`` at a time;
- ``since``: only the keys after the last folder's name (nothing is retired);
- a night on which three objects were deleted (the first, one in the middle, the last): a
  whole discovery that retires them.

On the embedded SQLite database and, with ``MLC_TEST_POSTGRES_URL`` set, on PostgreSQL.

Usage::

    python -m benchmarks.discovery [--objects 200000] [--workers 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import POSTGRES_URL_VARIABLE, fresh_postgres_database

PER_FOLDER = 1000
TARGET_SECONDS = 20.0


def _make_objects(root: Path, count: int) -> list[str]:
    """Empty image files in dated folders of PER_FOLDER; returns the folder prefixes."""
    folders = []
    for index in range(0, count, PER_FOLDER):
        day = index // PER_FOLDER
        folder = root / "images" / f"2026-{1 + day // 28:02d}-{1 + day % 28:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(index, min(index + PER_FOLDER, count)):
            (folder / f"photo-{number:07d}.jpg").touch()
        folders.append(f"images/{folder.name}/")
    return folders


@dataclass
class Timing:
    seconds: float
    cpu_seconds: float
    statements: int = 0
    database_seconds: float = 0.0
    rows_written: int = 0
    listed: int = 0
    retired: int = 0


@contextmanager
def _database_clock(engine: Any) -> Iterator[Timing]:
    """Count the statements the engine runs in the block and the time they take."""
    from sqlalchemy import event

    timing = Timing(0.0, 0.0)
    starts: dict[int, float] = {}

    def before(conn: Any, cursor: Any, *_: Any) -> None:
        starts[id(cursor)] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        timing.statements += 1
        timing.database_seconds += time.perf_counter() - starts.pop(id(cursor), time.perf_counter())
        if statement.lstrip()[:6].upper() in {"INSERT", "UPDATE", "DELETE"}:
            timing.rows_written += max(cursor.rowcount, 0)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    started, cpu = time.monotonic(), time.process_time()
    try:
        yield timing
    finally:
        timing.seconds = time.monotonic() - started
        timing.cpu_seconds = time.process_time() - cpu
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def _discover(workspace: Any, prefixes: list[str], **options: Any) -> Timing:
    from mlc_core.jobs.scoring.discovery import discover_images
    from mlc_core.jobs.scoring.reports import ScoreReport

    report = ScoreReport("bench", "new", prefixes)
    with _database_clock(workspace.engine) as timing:
        discover_images(workspace, prefixes, report, **options)
    timing.listed, timing.retired = report.listed, report.retired
    return timing


def _listing_alone(store: Any, prefix: str) -> Timing:
    started, cpu = time.monotonic(), time.process_time()
    listed = sum(len(page) for page in store.list_pages(prefix))
    return Timing(time.monotonic() - started, time.process_time() - cpu, listed=listed)


def _line(name: str, timing: Timing) -> str:
    per = max(timing.listed, 1)
    target = "meets" if timing.seconds <= TARGET_SECONDS else "MISSES"
    return (
        f"  {name}: {timing.seconds:.1f} s wall, {timing.cpu_seconds:.1f} s CPU for "
        f"{timing.listed} listed ({timing.seconds / per * 1e6:.0f} us wall, "
        f"{timing.cpu_seconds / per * 1e6:.0f} us CPU per object); database "
        f"{timing.statements} statements, {timing.database_seconds / per * 1e6:.1f} us per "
        f"listed object, {timing.rows_written} rows written; retired {timing.retired}  "
        f"({target} target <= {TARGET_SECONDS:g} s)"
    )


def _deleted_overnight(root: Path, folders: list[str]) -> list[Path]:
    """The first object, one in the middle and the last: deleted by the caller, put back after."""
    first, last = root / folders[0], root / folders[-1]
    middle = root / folders[len(folders) // 2]
    return [min(first.iterdir()), sorted(middle.iterdir())[PER_FOLDER // 2], max(last.iterdir())]


def _measure(database_url: str, root: Path, folders: list[str], workers: int) -> list[str]:
    from mlc_core.jobs.workspace import open_workspace
    from mlc_core.settings import load_settings

    settings = load_settings(home=root / "home", database_url=database_url, storage_url=str(root))
    workspace = open_workspace(settings)
    try:
        listing = _listing_alone(workspace.store, "images/")
        first = _discover(workspace, ["images/"])
        again = _discover(workspace, ["images/"])
        # One prefix per month: together they cover every image.
        prefixes = sorted({folder[: len("images/2026-01")] for folder in folders})
        split = _discover(workspace, prefixes, listing_workers=workers)
        last = folders[-1]
        since = _discover(workspace, ["images/"], since=last)
        deleted = _deleted_overnight(root, folders)
        for path in deleted:
            path.unlink()
        try:
            retiring = _discover(workspace, ["images/"])
        finally:
            for path in deleted:
                path.touch()
    finally:
        workspace.close()
    return [
        f"  listing alone: {listing.seconds:.1f} s wall, {listing.cpu_seconds:.1f} s CPU for "
        f"{listing.listed} objects",
        _line("first discovery (all new)", first),
        _line("no-op discovery (all known)", again),
        _line(f"no-op discovery over {len(prefixes)} prefixes, {workers} at a time", split),
        _line(f"since {last} (the last folder only; partial, retires nothing)", since),
        _line(f"discovery after {len(deleted)} deletions (first, middle, last)", retiring),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=4, help="prefixes listed at a time")
    arguments = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mlc-bench-discovery-") as folder:
        root = Path(folder)
        started = time.monotonic()
        folders = _make_objects(root / "store", arguments.objects)
        print(
            f"made {arguments.objects} objects in {len(folders)} folders in "
            f"{time.monotonic() - started:.0f} s ({os.cpu_count()} cores shared with other work)",
            flush=True,
        )
        sqlite_url = f"sqlite:///{root / 'mlc.db'}"
        lines = ["SQLite (embedded default):"]
        lines += _measure(sqlite_url, root / "store", folders, arguments.workers)
        print("\n".join(lines), flush=True)
        server = os.environ.get(POSTGRES_URL_VARIABLE)
        if server:
            with fresh_postgres_database(server) as url:
                lines = ["PostgreSQL:", *_measure(url, root / "store", folders, arguments.workers)]
            print("\n".join(lines), flush=True)
        else:
            print(f"PostgreSQL: skipped ({POSTGRES_URL_VARIABLE} is not set)")


if __name__ == "__main__":
    main()
