"""The web page's benchmark (not a test): gallery paging at collection sizes, a thumbnail storm.

In one run it prints:

- the time of a gallery page (``GET /api/images``, 100 images, with and without a tag filter)
  at the first key and deep in the collection (keyset paging), at two collection sizes, and
  the ratio of the larger size's time to the smaller's (flat paging: near 1);
- the time of the tag counts (one ``GROUP BY`` over the tags: it grows with the collection,
  which is why the page keeps it 30 s);
- a thumbnail storm against ``mlc ui`` in its own process: a page of 200 photo-like JPEGs
  (0.5 to 2 megapixels) asked for by 32 concurrent clients, each image 3 times, cold and then
  from the cache; thumbnails/s of both, their ratio, and the server's peak RSS after a warm-up
  of 20 thumbnails and after the storm (bounded memory: near 1).

Usage::

    python -m benchmarks.ui [--quick] [--sizes 20000,200000] [--postgres]

SQLite by default; ``--postgres`` uses a fresh database on ``MLC_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.common import DEFAULT_DATASET, POSTGRES_URL_VARIABLE, fresh_postgres_database
from benchmarks.common import make_photos as make_photo_jpegs

CLASSES = [f"class_{i:02d}" for i in range(20)]
CHUNK = 5000


def fill(settings: Any, count: int) -> None:
    """``count`` scored images, 2-3 tags each, under one champion."""
    import random

    from mlc_core.db.images import ImageRecord, register_images
    from mlc_core.db.model_versions import create_model_version, promote_model_version
    from mlc_core.db.scores import ImageScore, write_scores
    from mlc_core.jobs.workspace import open_workspace

    workspace = open_workspace(settings, check_store=False)
    chance = random.Random(7)
    with workspace.transaction() as session:
        version = create_model_version(
            session,
            version="v1",
            classes=CLASSES,
            thresholds=[0.5] * len(CLASSES),
            metrics={},
            backbone="compact_cnn",
            image_size=64,
            artifact_uri="x",
            artifact_sha256="0" * 64,
            card_uri="x",
        )
        promote_model_version(session, version, "benchmark")
        version_id = version.id
    for start in range(0, count, CHUNK):
        with workspace.transaction() as session:
            records = [
                ImageRecord(workspace.store.uri(f"images/{i:09d}.jpg"), "e", 1000, None)
                for i in range(start, min(start + CHUNK, count))
            ]
            ids = register_images(session, records)
            scores = []
            for image_id in ids.values():
                probabilities = [chance.random() * 0.4 for _ in CLASSES]
                for position in chance.sample(range(len(CLASSES)), chance.choice((2, 3))):
                    probabilities[position] = 0.5 + chance.random() * 0.5
                tags = tuple(
                    (c, p) for c, p in zip(CLASSES, probabilities, strict=True) if p >= 0.5
                )
                scores.append(ImageScore(image_id, tuple(probabilities), tags))
            write_scores(session, version_id, None, scores)
    if workspace.engine.dialect.name == "postgresql":
        # What autovacuum does soon after a bulk load; without statistics the planner guesses.
        with workspace.engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()
    workspace.close()


def time_pages(settings: Any, count: int) -> dict[str, float]:
    """Seconds per gallery page (best of 5) at the start and deep in the collection."""
    from fastapi.testclient import TestClient

    from flows.ui import create_app

    deep = f"images/{int(count * 0.9):09d}.jpg"
    asks = {
        "first page": {"limit": 100},
        "deep page": {"limit": 100, "after": deep},
        "first page, tag filter": {"limit": 100, "all": "class_03"},
        "deep page, tag filter": {"limit": 100, "all": "class_03", "after": deep},
    }
    found: dict[str, float] = {}
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8765") as client:
        client.get("/api/images", params={"limit": 1})
        for name, params in asks.items():
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                response = client.get("/api/images", params=params)
                best = min(best, time.perf_counter() - started)
                assert response.status_code == 200 and response.json()["images"], response.text
            found[name] = best
        started = time.perf_counter()
        from mlc_core.db.tag_search import count_tags

        state = client.app.state.ui  # type: ignore[attr-defined]
        with state.session() as (_, session):
            count_tags(session)
        found["tag counts"] = time.perf_counter() - started
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def storm(home: Path, photos: list[bytes]) -> dict[str, float]:
    """Thumbnails/s of a cold and a warm storm against ``mlc ui`` in its own process."""
    from mlc_core.db.images import ImageRecord, register_images
    from mlc_core.jobs.workspace import open_workspace
    from mlc_core.settings import load_settings

    settings = load_settings(home=home)
    workspace = open_workspace(settings)
    keys = [f"photos/{i:04d}.jpg" for i in range(len(photos))]
    infos = [workspace.store.put(key, data) for key, data in zip(keys, photos, strict=True)]
    with workspace.transaction() as session:
        register_images(
            session,
            [ImageRecord(workspace.store.uri(i.key), i.etag, i.size, None) for i in infos],
        )
    workspace.close()
    port = free_port()
    environment = {**os.environ, "MLC_HOME": str(home)}
    server = subprocess.Popen(
        [sys.executable, "-c", "from flows.cli import main; main()", "ui", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base)

        def fetch(key: str) -> int:
            with urllib.request.urlopen(f"{base}/thumbnails/{key}", timeout=120) as response:
                return len(response.read())

        for key in keys[:20]:
            fetch(key)
        warm_up_rss = peak_rss_mb(server.pid)
        asked = [key for key in keys[20:] for _ in range(3)]
        results = {}
        for name in ("cold", "warm"):
            started = time.perf_counter()
            with ThreadPoolExecutor(32) as pool:
                sizes = list(pool.map(fetch, asked))
            assert all(sizes)
            results[name] = len(asked) / (time.perf_counter() - started)
        results["rss after 20"] = warm_up_rss
        results["rss after storm"] = peak_rss_mb(server.pid)
        return results
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("mlc ui did not start within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes 2000,20000; 60 photos")
    parser.add_argument("--sizes", default="20000,200000")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    arguments = parser.parse_args()
    sizes = [2000, 20000] if arguments.quick else [int(s) for s in arguments.sizes.split(",")]
    photo_count = 60 if arguments.quick else arguments.photos
    from mlc_core.settings import load_settings

    timings: dict[int, dict[str, float]] = {}
    for size in sizes:
        with ExitStack() as stack:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            database = None
            if arguments.postgres:
                server = os.environ.get(POSTGRES_URL_VARIABLE)
                if not server:
                    raise SystemExit(f"--postgres needs {POSTGRES_URL_VARIABLE}")
                database = stack.enter_context(fresh_postgres_database(server))
            settings = load_settings(home=home, database_url=database)
            started = time.perf_counter()
            fill(settings, size)
            print(f"{size:,} images written in {time.perf_counter() - started:.1f} s", flush=True)
            timings[size] = time_pages(settings, size)
    backend = "PostgreSQL" if arguments.postgres else "SQLite"
    small, large = sizes[0], sizes[-1]
    print(f"\ngallery pages of 100 ({backend}; best of 5, in-process client):")
    print(f"{'':24} {small:>10,} {large:>10,}   ratio")
    for name in timings[small]:
        a, b = timings[small][name] * 1000, timings[large][name] * 1000
        print(f"{name:24} {a:8.1f}ms {b:8.1f}ms   {b / a:5.2f}")
    with tempfile.TemporaryDirectory() as folder:
        photos = make_photo_jpegs(arguments.dataset, photo_count)
        found = storm(Path(folder), photos)
    print(f"\nthumbnail storm: {photo_count - 20} images x 3 requests, 32 clients, mlc ui process")
    print(f"cold {found['cold']:.1f} thumbnails/s, warm {found['warm']:.1f} thumbnails/s")
    print(f"warm / cold: {found['warm'] / found['cold']:.1f}")
    print(
        f"peak RSS after 20 thumbnails {found['rss after 20']:.0f} MB, after the storm "
        f"{found['rss after storm']:.0f} MB: ratio "
        f"{found['rss after storm'] / found['rss after 20']:.2f}"
    )


if __name__ == "__main__":
    main()
