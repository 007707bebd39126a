"""The scoring job the way a user would build it with Ray Data: the peer of benchmarks/scoring.

``read_binary_files`` reads the images from the same S3 bucket through pyarrow's S3 file system
(the same endpoint and credentials), ``map_batches`` runs a callable class (one actor per core,
the model loaded once per actor) that decodes with mlc's own ``decode_image`` and scores with
mlc's own ``Predictor`` at the same batch size, and writes each batch's probabilities to
PostgreSQL with one ``executemany`` and one commit. Decode and inference are mlc's on purpose:
the comparison is then of the pipelines around them (reading, scheduling, moving bytes between
processes, writing), not of two ways to call the model.

Ray goes in the ``bench`` extra only. Run alone (after ``pip install -e '.[bench]'``)::

    python -m benchmarks.scoring_ray --help

or as part of ``python -m benchmarks.scoring``, which runs it on the same images, model and
database server in the same run and prints mlc / Ray Data images/s.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

TABLE = "ray_scores"


@dataclass
class RayResult:
    """Images scored, the seconds from the start of the dataset's execution to its end, and
    the seconds ``ray.init`` took before it."""

    images: int
    seconds: float
    startup_seconds: float
    actors: int

    @property
    def images_per_second(self) -> float:
        """Of the whole job, ``ray.init`` included: mlc's figure counts its process start."""
        return self.images / (self.startup_seconds + self.seconds)

    @property
    def execution_images_per_second(self) -> float:
        """Of the dataset's execution alone (the actors' start-up and model loading included)."""
        return self.images / self.seconds


class _Scorer:
    """One actor: the model loaded once, a PostgreSQL connection, a batch in, rows written."""

    def __init__(
        self, model_data: bytes, sha256: str, image_size: int, batch_size: int, dsn: str
    ) -> None:
        import psycopg

        from mlc_core.model.artifacts import deserialize_model
        from mlc_core.model.predict import Predictor

        self._predictor = Predictor(deserialize_model(model_data, sha256), batch_size=batch_size)
        self._image_size = image_size
        self._connection = psycopg.connect(dsn)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from mlc_core.errors import ImageDecodeError
        from mlc_core.images import decode_image

        paths, pixels = [], []
        for path, data in zip(batch["path"], batch["bytes"], strict=True):
            try:
                pixels.append(decode_image(data, self._image_size))
            except ImageDecodeError:
                continue
            paths.append(str(path))
        if pixels:
            rows = self._predictor.predict(np.stack(pixels))
            with self._connection.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO {TABLE} (path, probabilities) VALUES (%s, %s)",
                    [(p, [float(v) for v in row]) for p, row in zip(paths, rows, strict=True)],
                )
            self._connection.commit()
        return {"scored": np.array([len(paths)])}


def _libpq_dsn(database_url: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    password = f" password={url.password}" if url.password else ""
    return (
        f"host={url.host or '127.0.0.1'} port={url.port or 5432} dbname={url.database} "
        f"user={url.username or 'postgres'}{password}"
    )


def score_with_ray(
    *,
    bucket_path: str,
    s3_environment: dict[str, str],
    database_url: str,
    model: Any,
    batch_size: int,
    actors: int,
) -> RayResult:
    """Score every object under ``bucket_path`` ("bucket/prefix/") with Ray Data.

    ``model`` is a ``benchmarks.scoring.ModelFile``; ``database_url`` a fresh PostgreSQL
    database (SQLAlchemy URL) where the table of results is made.
    """
    import psycopg
    import pyarrow.fs
    import ray

    dsn = _libpq_dsn(database_url)
    with psycopg.connect(dsn) as connection:
        connection.execute(
            f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, path text NOT NULL, "
            "probabilities real[] NOT NULL)"
        )
    started = time.monotonic()
    ray.init(
        num_cpus=os.cpu_count() or 1,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=512 * 1024 * 1024,
        runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}},
    )
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        endpoint = s3_environment["AWS_ENDPOINT_URL"]
        filesystem = pyarrow.fs.S3FileSystem(
            access_key=s3_environment["AWS_ACCESS_KEY_ID"],
            secret_key=s3_environment["AWS_SECRET_ACCESS_KEY"],
            region=s3_environment["AWS_DEFAULT_REGION"],
            endpoint_override=endpoint.split("://", 1)[1],
            scheme=endpoint.split("://", 1)[0],
        )
        startup = time.monotonic() - started
        started = time.monotonic()
        scored_batches = (
            ray.data.read_binary_files(bucket_path, filesystem=filesystem, include_paths=True)
            .map_batches(
                _Scorer,
                fn_constructor_kwargs={
                    "model_data": model.data,
                    "sha256": model.sha256,
                    "image_size": model.image_size,
                    "batch_size": batch_size,
                    "dsn": dsn,
                },
                batch_size=batch_size,
                batch_format="numpy",
                concurrency=actors,
                # Half a core each: at one core per actor the actors hold every core of a
                # small machine and the read tasks never get scheduled (Ray Data then hangs).
                num_cpus=0.5,
            )
            .iter_batches(batch_size=None, batch_format="numpy")
        )
        scored = sum(int(batch["scored"].sum()) for batch in scored_batches)
        seconds = time.monotonic() - started
    finally:
        ray.shutdown()
    with psycopg.connect(dsn) as connection:
        written = connection.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
    assert written is not None and written[0] == scored, (written, scored)
    return RayResult(int(scored), seconds, startup, actors)
