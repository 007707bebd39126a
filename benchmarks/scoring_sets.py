"""One photo set of the scoring benchmark: the stage floor, the pipeline with one and two
worker processes, and the Ray Data peer, all on the same images, model and database server.

Used by ``python -m benchmarks.scoring``; see that module for the whole run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, S3Service, create_bucket, fresh_postgres_database
from benchmarks.scoring_floor import (
    StageFloor,
    database_floor_ms,
    decode_floor_ms,
    get_floor_ms,
)

FLOOR_SAMPLE = 400


@dataclass
class PipelineRun:
    """The scoring job in ``processes`` worker processes side by side on one database."""

    processes: int
    scored: int
    wall_seconds: float
    # Of the first process: CPU per image in its scoring phase, and its images/s there.
    phase_cpu_ms: float
    phase_images_per_second: float
    # Of the first process's scoring phase: kernel (system) CPU per image, and CPU per image
    # of each group of its threads (benchmarks.thread_cpu).
    phase_system_ms: float = 0.0
    thread_ms: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.scored / self.wall_seconds


@dataclass
class PhotoSetResult:
    label: str
    images: int
    floor: StageFloor
    pipelines: list[PipelineRun]
    server_cpu_ms: float
    ray: Any  # a RayResult, or the reason Ray Data could not run (str)
    boto3_get_ms: float = 0.0
    # The floor just before the pipeline runs and just after; ``floor`` is their mean.
    floors: tuple[StageFloor, StageFloor] | None = None


def _run_processes(count: int, environment: dict[str, str]) -> PipelineRun:
    """Start ``count`` scoring children at once; wait for all of them."""
    started = time.monotonic()
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.scoring", "child"],
            cwd=REPO_ROOT,
            env={**os.environ, **environment},
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    outputs = []
    for child in children:
        stdout, _ = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"scoring child failed with status {child.returncode}")
        outputs.append(json.loads([line for line in stdout.splitlines() if line[:1] == "{"][-1]))
    wall = time.monotonic() - started
    first = outputs[0]
    done = max(first["scored"] + first["failed"], 1)
    return PipelineRun(
        processes=count,
        scored=sum(output["scored"] for output in outputs),
        wall_seconds=wall,
        phase_cpu_ms=first["scoring_cpu_seconds"] / done * 1000,
        phase_system_ms=first["scoring_system_seconds"] / done * 1000,
        thread_ms={
            group: (cpu["user"] + cpu["system"]) / done * 1000
            for group, cpu in first["scoring_thread_cpu"].items()
        },
        phase_images_per_second=first["scoring_images_per_second"],
    )


@dataclass
class _PhotoSetBench:
    """One bucket of a photo set, measured on fresh databases of one PostgreSQL server."""

    label: str
    storage_url: str
    home: Path
    model: Any
    server_url: str
    batch_size: int
    inference_ms: float

    def workspace_on(self, database_url: str) -> Any:
        from benchmarks.scoring import _register_champion, _settings
        from mlc_core.jobs.workspace import open_workspace

        settings = _settings(database_url, self.storage_url, self.home, self.batch_size)
        workspace = open_workspace(settings)
        _register_champion(workspace, self.model)
        return workspace

    def upload(self, photos: list[bytes], count: int) -> None:
        from benchmarks.scoring import _upload

        with fresh_postgres_database(self.server_url) as database_url:
            workspace = self.workspace_on(database_url)
            try:
                _upload(workspace, photos, count)
            finally:
                workspace.close()

    def stages_alone(self, count: int, when: str) -> tuple[StageFloor, float]:
        """The floor now, and boto3's GET; the database floor takes a fresh database."""
        from mlc_core.storage import open_store

        with fresh_postgres_database(self.server_url) as database_url:
            workspace = self.workspace_on(database_url)
            try:
                get_ms, sample = get_floor_ms(workspace.store, FLOOR_SAMPLE)
                boto3_store = open_store(self.storage_url, s3_reader="boto3")
                boto3_get_ms, _ = get_floor_ms(boto3_store, FLOOR_SAMPLE)
                decode_ms = decode_floor_ms(sample, self.model.image_size)
                claim_ms, write_ms = database_floor_ms(workspace, self.batch_size, limit=count)
            finally:
                workspace.close()
        floor = StageFloor(get_ms, decode_ms, self.inference_ms, claim_ms, write_ms)
        print(f"  {self.label}: floor {when} {floor.describe()}", flush=True)
        return floor, boto3_get_ms

    def pipeline(self, processes: int, s3: S3Service) -> tuple[PipelineRun, float]:
        """``processes`` scoring children on a fresh database, and SeaweedFS's CPU per image."""
        from benchmarks.scoring import _child_environment, _settings

        with fresh_postgres_database(self.server_url) as database_url:
            self.workspace_on(database_url).close()
            settings = _settings(database_url, self.storage_url, self.home, self.batch_size)
            server_before = s3.cpu_seconds()
            run = _run_processes(processes, _child_environment(settings))
            server_cpu_ms = (s3.cpu_seconds() - server_before) / max(run.scored, 1) * 1000
        print(
            f"  {self.label}: {processes} process(es) scored {run.scored} in "
            f"{run.wall_seconds:.1f} s",
            flush=True,
        )
        return run, server_cpu_ms


def measure_photo_set(
    label: str,
    photos: list[bytes],
    count: int,
    *,
    model: Any,
    s3: S3Service,
    server_url: str,
    batch_size: int,
    inference_ms: float,
    ray_actors: int,
) -> PhotoSetResult:
    """Upload ``count`` objects of ``photos`` to a fresh bucket and measure the set.

    The floor is taken just before the one-process pipeline and just after it, and averaged:
    this machine's speed drifts by tens of per cent within minutes, and a floor taken minutes
    away from the run moved floor / pipeline by as much.
    """
    bucket = create_bucket()
    with tempfile.TemporaryDirectory(prefix="mlc-bench-home-") as home:
        bench = _PhotoSetBench(
            label, f"s3://{bucket}/bench", Path(home), model, server_url, batch_size, inference_ms
        )
        bench.upload(photos, count)
        before, boto3_before = bench.stages_alone(count, "before")
        one, server_cpu_ms = bench.pipeline(1, s3)
        after, boto3_after = bench.stages_alone(count, "after")
        two, _ = bench.pipeline(2, s3)
    ray = _ray_peer(f"{bucket}/bench/images/", s3, server_url, model, batch_size, ray_actors)
    return PhotoSetResult(
        label,
        count,
        StageFloor.mean(before, after),
        [one, two],
        server_cpu_ms,
        ray,
        (boto3_before + boto3_after) / 2,
        (before, after),
    )


def _ray_peer(
    bucket_path: str, s3: S3Service, server_url: str, model: Any, batch_size: int, actors: int
) -> Any:
    try:
        from benchmarks.scoring_ray import score_with_ray
    except ImportError as error:
        return f"Ray Data is not installed ({error}); pip install -e '.[bench]'"
    with fresh_postgres_database(server_url) as database_url:
        try:
            result = score_with_ray(
                bucket_path=bucket_path,
                s3_environment=s3.environment,
                database_url=database_url,
                model=model,
                batch_size=batch_size,
                actors=actors,
            )
        except ImportError as error:
            return f"Ray Data is not installed ({error}); pip install -e '.[bench]'"
    print(
        f"  Ray Data scored {result.images} in {result.seconds:.1f} s "
        f"(+ {result.startup_seconds:.1f} s of ray.init)",
        flush=True,
    )
    return result


def describe_photo_set(result: PhotoSetResult) -> list[str]:
    """The lines the benchmark prints for one photo set."""
    one, two = result.pipelines
    floor = result.floor
    ratio = floor.total_ms / one.phase_cpu_ms
    lines = [
        f"  {result.label}, {result.images} images:",
        f"    stage floor (each stage alone, one thread; the mean of before and after the "
        f"pipeline): {floor.describe()}; {floor.dominant()} dominates",
        *_floor_drift(result),
        f"    GET client CPU: {floor.get_ms:.2f} core-ms with the obstore reader, "
        f"{result.boto3_get_ms:.2f} with boto3's get_object; boto3 / obstore: "
        f"{result.boto3_get_ms / floor.get_ms:.1f}  "
        f"{'meets' if floor.get_ms <= 0.6 else 'MISSES'} target <= 0.6 ms",
        f"    pipeline: {one.phase_cpu_ms:.2f} core-ms per image in the scoring process "
        f"(+ {result.server_cpu_ms:.2f} in SeaweedFS, apart); floor / pipeline: {ratio:.2f}  "
        f"{'meets' if ratio >= 0.85 else 'MISSES'} target >= 0.85",
        *_where_the_glue_is(floor, one),
        f"    images/s: {one.images_per_second:.1f} with 1 worker process (whole run; "
        f"{one.phase_images_per_second:.1f} in its scoring phase), "
        f"{two.images_per_second:.1f} with 2 side by side; 2 / 1: "
        f"{two.images_per_second / one.images_per_second:.2f}",
    ]
    if isinstance(result.ray, str):
        lines.append(f"    Ray Data peer: not run: {result.ray}")
    else:
        best = max(one.images_per_second, two.images_per_second)
        ray = result.ray
        ratio_ray = one.images_per_second / ray.images_per_second
        lines.append(
            f"    Ray Data peer ({ray.actors} actors): {ray.images_per_second:.1f} images/s for "
            f"the whole job (ray.init {ray.startup_seconds:.1f} s + execution "
            f"{ray.seconds:.1f} s; mlc's whole run counts its process start likewise); mlc "
            f"(1 process) / Ray Data: {ratio_ray:.2f}  "
            f"{'meets' if ratio_ray >= 1.5 else 'MISSES'} target >= 1.5; mlc (best of 1 and 2 "
            f"processes) / Ray Data: {best / ray.images_per_second:.2f}; mlc (1 process) / "
            f"Ray Data's execution alone ({ray.execution_images_per_second:.1f} images/s): "
            f"{one.images_per_second / ray.execution_images_per_second:.2f}"
        )
    return lines


def _floor_drift(result: PhotoSetResult) -> list[str]:
    """floor / pipeline with the floor of before and of after alone: the machine's drift."""
    if result.floors is None:
        return []
    one = result.pipelines[0]
    before, after = result.floors
    return [
        f"    floor before / after the pipeline: {before.total_ms:.2f} / {after.total_ms:.2f} "
        f"core-ms per image; floor / pipeline with either alone: "
        f"{before.total_ms / one.phase_cpu_ms:.2f} / {after.total_ms / one.phase_cpu_ms:.2f}"
    ]


# Which floor stages each group of the scoring process's threads does.
STAGE_THREADS = {
    "GET + decode": ("mlc-read", "obstore (Rust runtime)"),
    "inference": ("TensorFlow",),
    "claim + write": ("mlc-score-feeder", "mlc-score-writer", "mlc-score-heartbeat"),
    "scoring thread (waits, hand-offs, progress)": ("main (scoring thread)",),
}


def _where_the_glue_is(floor: StageFloor, run: PipelineRun) -> list[str]:
    """Each stage's threads in the pipeline against the stage alone, core-ms per image."""
    if not run.thread_ms:
        return ["    (CPU per thread not measured: no /proc on this system)"]
    stage_floor = {
        "GET + decode": floor.get_ms + floor.decode_ms,
        "inference": floor.inference_ms,
        "claim + write": floor.claim_ms + floor.write_ms,
        "scoring thread (waits, hand-offs, progress)": 0.0,
    }
    parts = []
    counted: set[str] = set()
    for stage, groups in STAGE_THREADS.items():
        spent = sum(run.thread_ms.get(group, 0.0) for group in groups)
        counted.update(groups)
        parts.append(f"{stage} {spent:.2f} (alone {stage_floor[stage]:.2f})")
    other = sum(ms for group, ms in run.thread_ms.items() if group not in counted)
    return [
        "    where the pipeline's CPU goes, core-ms per image in its threads (the stage alone): "
        + ", ".join(parts)
        + f", other threads {other:.2f}; of all of it, {run.phase_system_ms:.2f} in the kernel"
    ]
