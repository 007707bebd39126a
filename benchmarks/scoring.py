"""Scoring throughput benchmark (not a test): SeaweedFS + PostgreSQL + the default model.

Puts N photo-like JPEGs (0.5 to 2 megapixels, made from the natural_scene photos: cropped to
photo aspects, upscaled, mirrored, colour-jittered, with sensor-like noise) into a SeaweedFS it
starts itself, and scores them into a fresh PostgreSQL database with an untrained model of the
default architecture (the training settings' backbone, at the size it scores at; throughput does not
depend on the weights). In one run it prints:

- end-to-end images/s of the scoring job (in a child process), for the whole run and for its
  scoring phase (after listing and model loading);
- the same model's throughput on pre-decoded tensors in the same forward passes, on the same
  TensorFlow threads (the ceiling), and
  the ratio;
- the CPU time per image of the scoring process's scoring phase, of the S3 server and of the
  model at the ceiling: other work on the machine changes the images/s of both the pipeline
  and the ceiling, but hardly their CPU time per image, so the ratio at equal CPU says what
  the pipeline can reach on cores of its own;
- the images/s of a seed-style loop (sequential get, ``model.predict`` on one image, one
  INSERT per row, a commit per image) on a subset, and the ratio;
- the peak RSS of the scoring process at the two sizes, and their ratio;
- the time of a no-op rerun over the larger set, after start-up.

Usage::

    MLC_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python -m benchmarks.scoring [--quick] [--sizes 2000,20000] [--batch-size 64]

Photos are generated once per distinct source (``--distinct``, default 2000) and reused for
larger sizes under different keys: scoring neither knows nor cares that two objects have the
same bytes, and generating 20,000 large JPEGs would take longer than scoring them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    DEFAULT_DATASET,
    POSTGRES_URL_VARIABLE,
    ChildResult,
    S3Service,
    create_bucket,
    fresh_postgres_database,
    make_photos,
    run_child,
    seaweedfs,
)
from benchmarks.thread_cpu import SAMPLER_THREAD, ThreadCpu

CLASSES = ["desert", "mountains", "sea", "sunset", "trees"]
TARGETS = {
    "pipeline / seed loop": 10.0,
    "RSS large / RSS small": 1.3,
    "no-op rerun seconds": 10.0,
}


@dataclass
class ModelFile:
    data: bytes
    sha256: str
    backbone: str
    image_size: int


def _build_default_model() -> ModelFile:
    import keras

    from mlc_core.model.artifacts import serialize_model, sha256_hex
    from mlc_core.model.build import build_model
    from mlc_core.settings import load_settings

    training = load_settings().training
    keras.utils.set_random_seed(1)
    # At the side a trained model of these settings scores at (MLC_TRAINING__SCORING_SCALE).
    size = training.scoring_image_size
    model = build_model(training.backbone, len(CLASSES), size)
    data = serialize_model(model)
    return ModelFile(data, sha256_hex(data), training.backbone, size)


def _settings(database_url: str, storage_url: str, home: Path, batch_size: int) -> Any:
    from mlc_core.settings import load_settings

    return load_settings(
        home=home,
        database_url=database_url,
        storage_url=storage_url,
        scoring={"batch_size": batch_size},
    )


def _register_champion(workspace: Any, model: ModelFile) -> None:
    from mlc_core.db.model_versions import create_model_version, promote_model_version

    key = "models/v1/model.keras"
    workspace.store.put(key, model.data)
    with workspace.transaction() as session:
        version = create_model_version(
            session,
            version="v1",
            classes=CLASSES,
            thresholds=[0.5] * len(CLASSES),
            metrics={},
            backbone=model.backbone,
            image_size=model.image_size,
            artifact_uri=workspace.store.uri(key),
            artifact_sha256=model.sha256,
            card_uri=workspace.store.uri("models/v1/card.json"),
        )
        promote_model_version(session, version, "benchmark: untrained default architecture")


def _upload(workspace: Any, photos: list[bytes], count: int) -> list[str]:
    keys = [f"images/photo-{index:06d}.jpg" for index in range(count)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(
            pool.map(
                lambda item: workspace.store.put(item[1], photos[item[0] % len(photos)]),
                enumerate(keys),
            )
        )
    return keys


@dataclass
class Ceiling:
    """The model alone on decoded tensors: images/s, and CPU time per image (all threads)."""

    images_per_second: float
    cpu_ms_per_image: float


def _ceiling(model: ModelFile, photos: list[bytes], batch_size: int, seconds: float) -> Ceiling:
    """The model alone on decoded tensors, batch after batch (after warm-up), in the same
    :class:`~mlc_core.model.predict.Predictor`, forward passes and TensorFlow threads as the
    pipeline (:func:`main` sets the threads before TensorFlow first runs)."""
    from mlc_core.images import decode_image
    from mlc_core.model.artifacts import deserialize_model
    from mlc_core.model.predict import Predictor
    from mlc_core.settings import ScoringSettings

    passes = min(ScoringSettings().inference_batch_size, batch_size)
    predictor = Predictor(deserialize_model(model.data, model.sha256), batch_size=passes)
    batch = np.stack([decode_image(photo, model.image_size) for photo in photos[:batch_size]])
    for _ in range(3):
        predictor.predict(batch)
    done, started, cpu_started = 0, time.monotonic(), time.process_time()
    while time.monotonic() - started < seconds:
        predictor.predict(batch)
        done += len(batch)
    cpu = time.process_time() - cpu_started
    return Ceiling(done / (time.monotonic() - started), cpu / done * 1000)


def _decode_milliseconds(photos: list[bytes], image_size: int, count: int = 200) -> float:
    """CPU time of one thread per decoded photo, as the pipeline decodes (not wall time, which
    other work on the machine stretches)."""
    from mlc_core.images import decode_image

    sample = photos[:count]
    started = time.thread_time()
    for photo in sample:
        decode_image(photo, image_size)
    return (time.thread_time() - started) / len(sample) * 1000


def _read_decode_rate(workspace: Any, keys: list[str], image_size: int) -> float:
    """Images/s of reading and decoding alone, in the pipeline's thread pool, no model."""
    from mlc_core.images import decode_image

    workers = workspace.settings.scoring.read_workers
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda key: decode_image(workspace.store.get(key), image_size), keys))
    return len(keys) / (time.monotonic() - started)


def _seed_loop(workspace: Any, model: ModelFile, keys: list[str]) -> float:
    """Images/s of the naive loop a first version would have: one image at a time."""
    from sqlalchemy import insert, select

    from mlc_core.db.models import Image, ModelVersion, Score, utc_now
    from mlc_core.images import decode_image
    from mlc_core.model.artifacts import deserialize_model

    keras_model = deserialize_model(model.data, model.sha256)
    with workspace.transaction() as session:
        version_id = session.scalar(select(ModelVersion.id).where(ModelVersion.version == "v1"))
    keras_model.predict(np.zeros((1, model.image_size, model.image_size, 3)), verbose=0)
    started = time.monotonic()
    for key in keys:
        data = workspace.store.get(key)
        pixels = decode_image(data, model.image_size)
        probabilities = keras_model.predict(pixels[None].astype("float32"), verbose=0)[0]
        with workspace.engine.begin() as connection:
            image_id = connection.execute(
                insert(Image)
                .values(
                    uri=workspace.store.uri(key),
                    etag="seed",
                    size=len(data),
                    first_seen_at=utc_now(),
                    status="scored",
                )
                .returning(Image.id)
            ).scalar_one()
            connection.execute(
                insert(Score).values(
                    image_id=image_id,
                    model_version_id=version_id,
                    probabilities=[float(p) for p in probabilities],
                    scored_at=utc_now(),
                )
            )
    return len(keys) / (time.monotonic() - started)


def _child_environment(settings: Any) -> dict[str, str]:
    return {
        "MLC_HOME": str(settings.home),
        "MLC_DATABASE_URL": settings.resolved_database_url,
        "MLC_STORAGE_URL": settings.resolved_storage_url,
        "MLC_SCORING__BATCH_SIZE": str(settings.scoring.batch_size),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


class _PhaseClock:
    """The child's store, noting the process's CPU time when the first image is read.

    The scoring phase starts then: the model file is read before it, and discovery only lists.
    Everything else goes to the store itself.
    """

    def __init__(self, store: Any, images_prefix: str) -> None:
        self._store = store
        self._images_prefix = images_prefix
        self.cpu_at_first_image: float | None = None
        self.times_at_first_image: os.times_result | None = None
        self.threads = ThreadCpu()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def get(self, key: str, **options: Any) -> bytes:
        if self.cpu_at_first_image is None and key.startswith(self._images_prefix):
            self.cpu_at_first_image = time.process_time()
            self.times_at_first_image = os.times()
            self.threads.start()
        return self._store.get(key, **options)


def _warm_model(workspace: Any) -> None:
    """Load and trace the champion before the clock starts, as a worker that scored before
    has: loading is start-up, paid once per process, not CPU per image."""
    from mlc_core.db.model_versions import require_champion
    from mlc_core.jobs.scoring.model_cache import scoring_predictor

    with workspace.transaction() as session:
        champion = require_champion(session)
        session.expunge(champion)
    scoring = workspace.settings.scoring
    predictor = scoring_predictor(workspace.store, champion, scoring, scoring.batch_size)
    predictor.predict(np.zeros((1, champion.image_size, champion.image_size, 3), np.uint8))


def _child() -> None:
    """Score with the settings from the environment; print the report, the start-up time and
    the CPU time of the scoring phase (all threads of this process)."""
    started = time.monotonic()
    from mlc_core.jobs.scoring import score_images
    from mlc_core.jobs.workspace import open_workspace
    from mlc_core.settings import load_settings

    settings = load_settings()
    workspace = open_workspace(settings)
    _warm_model(workspace)
    clock = _PhaseClock(workspace.store, settings.images_prefix)
    workspace.store = clock
    startup = time.monotonic() - started
    report = score_images(workspace)
    phase_cpu = (
        0.0 if clock.cpu_at_first_image is None else time.process_time() - clock.cpu_at_first_image
    )
    # User and kernel time apart: threads that wait on each other cost the kernel too.
    times, first = os.times(), clock.times_at_first_image
    threads = clock.threads.stop()
    user = 0.0 if first is None else times.user - first.user
    system = 0.0 if first is None else times.system - first.system
    # The sampler is the benchmark's, not the pipeline's: its CPU is taken out again.
    sampler = threads.pop(SAMPLER_THREAD, {"user": 0.0, "system": 0.0})
    phase_cpu -= sampler["user"] + sampler["system"]
    user -= sampler["user"]
    system -= sampler["system"]
    workspace.close()
    output = {
        **report.as_dict(),
        "startup_seconds": startup,
        "scoring_cpu_seconds": phase_cpu,
        "scoring_user_seconds": user,
        "scoring_system_seconds": system,
        "scoring_thread_cpu": threads,
    }
    print(json.dumps(output), flush=True)


@dataclass
class SizeResult:
    images: int
    first: ChildResult
    rerun: ChildResult | None
    # CPU time the S3 server spent during the first run, per image scored.
    server_cpu_ms_per_image: float = 0.0
    read_decode_rate: float | None = None
    seed_rate: float | None = None
    load_average: float = 0.0


def _measure_size(
    count: int,
    photos: list[bytes],
    model: ModelFile,
    s3: S3Service,
    server_url: str,
    batch_size: int,
    *,
    rerun: bool,
    seed_images: int,
) -> SizeResult:
    from mlc_core.jobs.workspace import open_workspace

    storage_url = f"s3://{create_bucket()}/bench"
    with (
        fresh_postgres_database(server_url) as database_url,
        tempfile.TemporaryDirectory(prefix="mlc-bench-home-") as home,
    ):
        settings = _settings(database_url, storage_url, Path(home), batch_size)
        workspace = open_workspace(settings)
        try:
            _register_champion(workspace, model)
            started = time.monotonic()
            keys = _upload(workspace, photos, count)
            print(f"  uploaded {count} photos in {time.monotonic() - started:.0f} s", flush=True)
            server_cpu = s3.cpu_seconds()
            first = run_child(["child"], _child_environment(settings))
            server_cpu = s3.cpu_seconds() - server_cpu
            load_average = os.getloadavg()[0]
            print(
                f"  scored {first.output['scored']} in {first.output['seconds']:.1f} s", flush=True
            )
            again = run_child(["child"], _child_environment(settings)) if rerun else None
            result = SizeResult(
                count,
                first,
                again,
                server_cpu_ms_per_image=server_cpu / max(first.output["scored"], 1) * 1000,
                load_average=load_average,
            )
            if seed_images:
                result.read_decode_rate = _read_decode_rate(
                    workspace, keys[: 4 * seed_images], model.image_size
                )
                with fresh_postgres_database(server_url) as seed_url:
                    seed_workspace = open_workspace(
                        _settings(seed_url, storage_url, Path(home), batch_size)
                    )
                    try:
                        _register_champion(seed_workspace, model)
                        result.seed_rate = _seed_loop(seed_workspace, model, keys[:seed_images])
                    finally:
                        seed_workspace.close()
        finally:
            workspace.close()
    return result


def _verdict(name: str, value: float) -> str:
    target = TARGETS[name]
    lower_is_better = name in ("RSS large / RSS small", "no-op rerun seconds")
    met = value <= target if lower_is_better else value >= target
    return f"{'meets' if met else 'MISSES'} target {'<=' if lower_is_better else '>='} {target:g}"


def _rates(result: SizeResult) -> tuple[float, float]:
    """Images/s of one scoring run: the whole run, and its scoring phase."""
    report = result.first.output
    return report["scored"] / report["seconds"], report["scoring_images_per_second"]


def _phase_cpu_ms(result: SizeResult) -> float:
    """CPU time per image of the scoring process in its scoring phase, all threads."""
    report = result.first.output
    return report["scoring_cpu_seconds"] / max(report["scored"] + report["failed"], 1) * 1000


def _print_results(
    small: SizeResult,
    large: SizeResult,
    ceilings: list[Ceiling],
    seed_images: int,
    decode_ms: float,
    batch_size: int,
    model: ModelFile,
) -> None:
    assert large.rerun is not None and small.seed_rate and small.read_decode_rate
    cores = os.cpu_count() or 1
    ceiling = max(c.images_per_second for c in ceilings)
    from mlc_core.settings import ScoringSettings

    scoring = ScoringSettings()
    # The least CPU the model was seen to need: the ratio at equal CPU errs against the pipeline.
    model_cpu_ms = min(c.cpu_ms_per_image for c in ceilings)
    seed_rate, read_decode = small.seed_rate, small.read_decode_rate
    # Stages that share the same cores: at best each image costs the CPU of both.
    shared_bound = 1 / (1 / ceiling + 1 / read_decode)
    rerun = large.rerun.output
    rss_ratio = large.first.max_rss_mb / small.first.max_rss_mb
    small_phase = _rates(small)[1]
    seed_ratio = small_phase / seed_rate
    lines = [
        "",
        f"mlc scoring benchmark: {model.backbone} at {model.image_size} px, batch {batch_size} "
        f"(forward passes of {scoring.inference_batch_size} on "
        f"{scoring.inference_threads or 'all'} TensorFlow thread(s)), "
        f"{os.cpu_count()} CPU cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
        f"  ceiling (model alone on decoded tensors): {ceiling:.1f} images/s "
        f"(measured {', '.join(f'{c.images_per_second:.1f}' for c in ceilings)}; the highest "
        f"is used); the model needs {model_cpu_ms:.2f} core-ms per image",
    ]
    for result in (small, large):
        run_rate, phase_rate = _rates(result)
        report = result.first.output
        lines.append(
            f"  end-to-end, {result.images} images: {run_rate:.1f} images/s for the whole run "
            f"({report['seconds']:.1f} s with listing and model loading), {phase_rate:.1f} "
            f"images/s in the scoring phase; / ceiling: {run_rate / ceiling:.2f} and "
            f"{phase_rate / ceiling:.2f}  (no target: the decode and the GET cost more than "
            "the model, see floor / pipeline below)"
            f"  (load average {result.load_average:.1f}; the model ran "
            f"{report['inference_seconds'] / report['scoring_seconds']:.0%} of the phase)"
        )
        process_ms, server_ms = _phase_cpu_ms(result), result.server_cpu_ms_per_image
        used_cores = report["scoring_cpu_seconds"] / report["scoring_seconds"]
        lines.append(
            f"    CPU per image in the scoring phase: {process_ms:.1f} core-ms in the scoring "
            f"process (which got {used_cores:.1f} of the {cores} cores) + {server_ms:.1f} in "
            f"SeaweedFS; with the cores to itself the pipeline could reach about "
            f"{cores * 1000 / (process_ms + server_ms):.0f} images/s; pipeline / ceiling at "
            f"equal CPU: {model_cpu_ms / (process_ms + server_ms):.2f}"
        )
    lines += [
        f"  seed-style loop on {seed_images} images: {seed_rate:.1f} images/s; pipeline "
        f"({small.images} images, just before) / seed loop: {seed_ratio:.1f}  "
        f"{_verdict('pipeline / seed loop', seed_ratio)}",
        f"  peak RSS of the scoring process: {small.first.max_rss_mb:.0f} MB at {small.images}, "
        f"{large.first.max_rss_mb:.0f} MB at {large.images}; ratio {rss_ratio:.2f}  "
        f"{_verdict('RSS large / RSS small', rss_ratio)}",
        f"  no-op rerun over {large.images} scored images: {rerun['seconds']:.1f} s after "
        f"start-up ({rerun['startup_seconds']:.1f} s start-up, listed {rerun['listed']}, "
        f"scored {rerun['scored']})  {_verdict('no-op rerun seconds', rerun['seconds'])}",
        f"  reading + decoding alone (no model, {small.images} images): {read_decode:.1f} "
        f"images/s; decoding takes {decode_ms:.1f} core-ms per photo, inference "
        f"{model_cpu_ms:.2f} core-ms per image at the ceiling",
        f"  sharing the same cores, the best possible is about {shared_bound:.1f} images/s "
        f"(1 / (1/ceiling + 1/read-decode)); pipeline ({small.images} images) / that bound: "
        f"{small_phase / shared_bound:.2f}",
    ]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "child"])
    parser.add_argument("--quick", action="store_true", help="300 and 1,000 images")
    parser.add_argument("--sizes", help="two image counts, e.g. 2000,20000")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed-images", type=int, help="images for the seed-style loop")
    parser.add_argument("--distinct", type=int, default=2000, help="distinct photos to make")
    parser.add_argument(
        "--set-images",
        type=int,
        help="images per photo set for the floor, 1 and 2 processes and Ray (default 2000)",
    )
    parser.add_argument(
        "--ray-actors", type=int, default=os.cpu_count() or 1, help="Ray Data actors"
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        default=Path(os.environ.get("MLC_BENCH_DATASET", DEFAULT_DATASET)),
        help="folder of source photos (default: natural_scene, or MLC_BENCH_DATASET)",
    )
    parser.add_argument(
        "--photo-cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "mlc-bench-photos",
        help="where made photos are kept for the next run",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(POSTGRES_URL_VARIABLE),
        help=f"a PostgreSQL server URL; fresh databases are made on it ({POSTGRES_URL_VARIABLE})",
    )
    arguments = parser.parse_args(argv)
    if arguments.mode == "child":
        _child()
        return
    if not arguments.database_url:
        parser.error(f"give --database-url or set {POSTGRES_URL_VARIABLE}")
    if arguments.sizes:
        small_count, large_count = (int(part) for part in arguments.sizes.split(","))
    else:
        small_count, large_count = (300, 1000) if arguments.quick else (2000, 20000)
    seed_images = arguments.seed_images or (100 if arguments.quick else 200)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mlc_core.model.predict import use_inference_threads
    from mlc_core.settings import ScoringSettings

    # As a scoring process does, before this one first runs TensorFlow: the ceiling is the
    # model on the pipeline's threads.
    use_inference_threads(ScoringSettings().inference_threads)

    started = time.monotonic()
    photos = make_photos(
        arguments.dataset, min(arguments.distinct, large_count), cache=arguments.photo_cache
    )
    sizes = [len(photo) for photo in photos]
    print(
        f"made {len(photos)} distinct photos ({sum(sizes) / len(photos) / 1024:.0f} KB on "
        f"average) in {time.monotonic() - started:.0f} s",
        flush=True,
    )
    model = _build_default_model()
    decode_ms = _decode_milliseconds(photos, model.image_size)
    with seaweedfs() as s3:
        ceilings = [_ceiling(model, photos, arguments.batch_size, seconds=10)]
        print(f"ceiling {ceilings[0].images_per_second:.1f} images/s", flush=True)
        photo_sets = _measure_photo_sets(arguments, photos, model, s3, ceilings[0])
        print(f"{small_count} images:", flush=True)
        small = _measure_size(
            small_count,
            photos,
            model,
            s3,
            arguments.database_url,
            arguments.batch_size,
            rerun=False,
            seed_images=seed_images,
        )
        print(f"{large_count} images:", flush=True)
        large = _measure_size(
            large_count,
            photos,
            model,
            s3,
            arguments.database_url,
            arguments.batch_size,
            rerun=True,
            seed_images=0,
        )
        ceilings.append(_ceiling(model, photos, arguments.batch_size, seconds=10))
    # The floor is each stage at its cheapest: the model's CPU per image at the best of the
    # run's ceilings (one measured while other work ran would flatter floor / pipeline).
    best_inference_ms = min(ceiling.cpu_ms_per_image for ceiling in ceilings)
    for result in photo_sets:
        for floor in (result.floor, *(result.floors or ())):
            floor.inference_ms = best_inference_ms
    _print_results(small, large, ceilings, seed_images, decode_ms, arguments.batch_size, model)
    from benchmarks.scoring_sets import describe_photo_set

    lines = ["  per photo set (the machine's cores are shared with other work; ratios are"]
    lines.append("  measured within this run):")
    for result in photo_sets:
        lines += describe_photo_set(result)
    print("\n".join(lines), flush=True)


def _measure_photo_sets(
    arguments: argparse.Namespace,
    photos: list[bytes],
    model: ModelFile,
    s3: S3Service,
    ceiling: Ceiling,
) -> list[Any]:
    """The floor, 1 and 2 processes and Ray Data for the made photos and natural_scene's."""
    from benchmarks.scoring_sets import measure_photo_set

    count = arguments.set_images or (300 if arguments.quick else 2000)
    small_photos = [
        path.read_bytes() for path in sorted(arguments.dataset.iterdir()) if path.suffix == ".jpg"
    ]
    results = []
    for label, chosen in (
        ("0.5-2 MP photos", photos),
        ("small natural_scene photos", small_photos),
    ):
        print(f"{label}:", flush=True)
        results.append(
            measure_photo_set(
                label,
                chosen,
                count,
                model=model,
                s3=s3,
                server_url=arguments.database_url,
                batch_size=arguments.batch_size,
                inference_ms=ceiling.cpu_ms_per_image,
                ray_actors=arguments.ray_actors,
            )
        )
    return results


if __name__ == "__main__":
    main()
