"""What benchmarks share: a SeaweedFS server, fresh PostgreSQL databases, photo-like JPEGs, and
child processes whose peak memory is measured.

The S3 server is the one the tests use (``tests/fixtures/s3.py``: ``weed mini`` on loopback
ports with generated credentials), started and stopped here without pytest.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = REPO_ROOT.parent / "shared" / "datasets" / "natural_scene" / "images"
POSTGRES_URL_VARIABLE = "MLC_TEST_POSTGRES_URL"
# Shapes of real photos: 4:3, 3:2, 16:9, square and portrait.
ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3)


@dataclass
class S3Service:
    """A running SeaweedFS: the AWS_* variables that reach it, and its process id."""

    environment: dict[str, str]
    pid: int

    def cpu_seconds(self) -> float:
        """The CPU time the server has used so far (user + system, all its threads)."""
        return process_cpu_seconds(self.pid)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from ``/proc`` (Linux)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name in parentheses may hold spaces; the fields after it are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def seaweedfs() -> Iterator[S3Service]:
    """Run a SeaweedFS S3 server for the block.

    The AWS_* variables that reach it are also set in this process (and so passed to children)
    while it runs.
    """
    from tests.fixtures.s3 import _start, _stop

    with tempfile.TemporaryDirectory(prefix="mlc-bench-s3-") as folder:
        process, server = _start(Path(folder))
        environment = {
            "AWS_ENDPOINT_URL": server.endpoint_url,
            "AWS_ACCESS_KEY_ID": server.access_key,
            "AWS_SECRET_ACCESS_KEY": server.secret_key,
            "AWS_DEFAULT_REGION": server.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        saved = {name: os.environ.get(name) for name in environment}
        os.environ.update(environment)
        try:
            server.client()  # fail here, not in the middle of a measurement
            yield S3Service(environment, process.pid)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            _stop(process)


def create_bucket() -> str:
    import boto3

    name = f"mlc-bench-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, migrated database on the server of ``server_url``, dropped afterwards."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    from mlc_core.db.engine import create_db_engine
    from mlc_core.db.migrate import upgrade_schema

    server = make_url(server_url)
    name = f"mlc_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        engine = create_db_engine(url)
        upgrade_schema(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _photo(source: Path, seed: int) -> bytes:
    """One photo-like JPEG of 0.5 to 2 megapixels made from a source photo.

    The source is cropped to a random photo aspect, scaled to a random size, maybe mirrored,
    and its brightness and colour jittered; then saved at a camera-like JPEG quality.
    """
    rng = np.random.default_rng(seed)
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    aspect = float(rng.choice(ASPECTS))
    width, height = image.size
    if width / height > aspect:
        crop_width, crop_height = int(height * aspect), height
    else:
        crop_width, crop_height = width, int(width / aspect)
    left = int(rng.integers(0, width - crop_width + 1))
    top = int(rng.integers(0, height - crop_height + 1))
    image = image.crop((left, top, left + crop_width, top + crop_height))
    pixels = rng.uniform(0.5e6, 2.0e6)
    new_height = round((pixels / aspect) ** 0.5)
    new_width = round(new_height * aspect)
    image = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.8, 1.2))
    # Sensor-like noise, so the upscaled photo has fine detail everywhere as real ones do.
    noisy = np.asarray(image, dtype=np.int16) + rng.normal(0, 3, (new_height, new_width, 1))
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(85, 96)))
    return buffer.getvalue()


def _photo_task(arguments: tuple[str, int]) -> bytes:
    return _photo(Path(arguments[0]), arguments[1])


def make_photos(
    dataset: Path, count: int, *, seed: int = 1, cache: Path | None = None
) -> list[bytes]:
    """``count`` distinct photo-like JPEGs from the photos in ``dataset`` (in parallel).

    With ``cache``, photos made before with the same seed are read back from that folder and
    new ones are written to it: making them costs more than scoring them.
    """
    sources = sorted(path for path in dataset.iterdir() if path.suffix.lower() in (".jpg", ".jpeg"))
    if not sources:
        raise SystemExit(f"no JPEG photos in {dataset}; pass --dataset with a folder of photos")
    folder = cache / f"seed-{seed}" if cache is not None else None
    cached = [folder / f"photo-{index:06d}.jpg" for index in range(count)] if folder else []
    if cached and all(path.is_file() for path in cached):
        return [path.read_bytes() for path in cached]
    tasks = [
        (str(sources[index % len(sources)]), seed * 1_000_003 + index) for index in range(count)
    ]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        photos = list(pool.map(_photo_task, tasks, chunksize=16))
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for path, photo in zip(cached, photos, strict=True):
            path.write_bytes(photo)
    return photos


@dataclass
class ChildResult:
    """What a measured child process printed last (JSON), its peak memory and its wall time."""

    output: dict[str, Any]
    max_rss_mb: float
    seconds: float


def run_child(arguments: list[str], environment: dict[str, str]) -> ChildResult:
    """Run ``python -m benchmarks.scoring <arguments>`` and measure its peak resident memory."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.scoring", *arguments],
        cwd=REPO_ROOT,
        env={**os.environ, **environment},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    stdout = process.stdout.read()
    # wait4 gives this child's own resource usage, not the sum over every child so far.
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"benchmark child {arguments} failed with status {process.returncode}")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    # Linux reports ru_maxrss in kilobytes.
    return ChildResult(json.loads(lines[-1]), usage.ru_maxrss / 1024, seconds)
