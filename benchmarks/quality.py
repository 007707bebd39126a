"""Quality benchmark: train the default configuration on natural_scene and measure it honestly.

Run it with ``python -m benchmarks.quality [--data DIR] [--epochs N] [--backbone NAME]
[--image-size PX] [--seed S]``. It is a script, not a test: a full run trains for minutes.

What it does, through the same functions ``mlc train`` uses (``mlc_core.jobs.training``, whose
build-train-calibrate-evaluate steps are :func:`mlc_core.model.training.fit_and_calibrate`):

1. Reads ``labels.csv`` (``filename,tags`` with ``|``-joined tags) and decodes every image in
   ``images/`` once with :func:`mlc_core.model.dataset.decode_labeled_images`.
2. Splits the images with :func:`mlc_core.model.split.split_dataset` (multilabel-stratified,
   keyed on the file name, fixed seed): 20% test, and the remaining 80% into train and a
   validation part of ``TrainingSettings().validation_fraction`` of all images. Validation
   drives early stopping and threshold calibration; the test images are touched only by the
   final evaluation.
3. Trains ``TrainingSettings()`` (the defaults, unless an option overrides one), calibrates
   per-class thresholds on validation and prints the test metrics and the training time,
   plus the Hamming loss and subset accuracy the top-class fallback (a tagging option, off
   by default) would give: every natural_scene image carries at least one class.
4. Times compiled inference (:class:`mlc_core.model.predict.Predictor`) of the trained model
   and of a randomly initialized MobileNetV3Small at 128 px, the reference for "fast on CPU",
   on the same pre-decoded batches: warm-up excluded, the median of several repeats.

The data set lives outside the repository and is never copied into it: ``--data``, else
``MLC_BENCH_DATASET_DIR``, else ``<repo>/../shared/datasets/natural_scene``.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlc_core.labels import LabelVocabulary, parse_tags, predicted_labels
from mlc_core.settings import TrainingSettings

DATASET_ENV = "MLC_BENCH_DATASET_DIR"
DEFAULT_DATASET_DIR = Path(__file__).resolve().parents[1].parent / "shared/datasets/natural_scene"
TEST_FRACTION = 0.2
REFERENCE_BACKBONE = "mobilenet_v3_small"
REFERENCE_IMAGE_SIZE = 128
# The scoring job's batch size (ScoringSettings.batch_size); both models get the same.
INFERENCE_BATCH_SIZE = 64
INFERENCE_IMAGES = 512
INFERENCE_REPEATS = 5


@dataclass
class LabeledDataset:
    """The benchmark's images on disk: file names, in file order, and their tags."""

    directory: Path
    keys: list[str]
    tags: list[list[str]]

    def read_bytes(self, key: str) -> bytes:
        return (self.directory / "images" / key).read_bytes()


def dataset_dir(option: str | None) -> Path:
    """Return the data set directory: the option, else the environment, else the default."""
    return Path(option or os.environ.get(DATASET_ENV) or DEFAULT_DATASET_DIR).expanduser()


def load_labels(directory: Path) -> LabeledDataset:
    """Read ``labels.csv`` of a data set directory.

    Raises:
        SystemExit: the directory has no ``labels.csv`` or no ``images/`` folder.
    """
    labels_file = directory / "labels.csv"
    if not labels_file.is_file() or not (directory / "images").is_dir():
        raise SystemExit(
            f"no labels.csv and images/ under {directory}; pass --data DIR or set {DATASET_ENV}"
        )
    keys: list[str] = []
    tags: list[list[str]] = []
    with labels_file.open(newline="") as handle:
        for row in csv.DictReader(handle):
            keys.append(row["filename"])
            tags.append(parse_tags(row["tags"]))
    return LabeledDataset(directory, keys, tags)


def run_quality(data: LabeledDataset, settings: TrainingSettings) -> dict[str, Any]:
    """Train ``settings`` on ``data`` as the train job does and evaluate on a 20% test split.

    Returns:
        The test metrics (``evaluate_predictions``) plus the split sizes, the epochs run, the
        seconds spent decoding and training, and the trained model.
    """
    from mlc_core.model.dataset import decode_labeled_images
    from mlc_core.model.recipe import fit_and_calibrate
    from mlc_core.model.split import split_dataset
    from mlc_core.model.training import EpochReport, row_indices

    vocabulary = LabelVocabulary.from_tags(tag for tags in data.tags for tag in tags)
    started = time.perf_counter()
    decoded = decode_labeled_images(data.keys, data.read_bytes, settings.image_size)
    decode_seconds = time.perf_counter() - started
    if decoded.failures:
        print(f"skipped {len(decoded.failures)} unreadable images")
    tags_of = dict(zip(data.keys, data.tags, strict=True))
    keys = decoded.keys
    label_matrix = np.stack([vocabulary.to_multi_hot(tags_of[key]) for key in keys])
    split = split_dataset(
        keys,
        label_matrix,
        validation_fraction=settings.validation_fraction,
        test_fraction=TEST_FRACTION,
        seed=settings.seed,
    )
    split_sizes = (len(split.train), len(split.validation), len(split.test))
    print(
        f"{len(keys)} images, classes {', '.join(vocabulary.classes)}; split train "
        f"{split_sizes[0]} / validation {split_sizes[1]} / test {split_sizes[2]}; "
        f"decoded at {settings.image_size} px in {decode_seconds:.1f} s"
    )

    def progress(report: EpochReport) -> None:
        print(
            f"  epoch {report.epoch:3d}/{report.epochs}: loss {report.loss:.4f}  validation "
            f"loss {report.validation_loss:.4f}  mAP {report.validation_map:.4f}  "
            f"({report.seconds:.1f} s)",
            flush=True,
        )

    fitted = fit_and_calibrate(
        decoded, label_matrix, split, vocabulary.classes, settings, on_epoch_end=progress
    )
    # Every natural_scene image carries a class, so the top-class fallback (off by default:
    # users' images may carry none) is measured here as what it would give on such data.
    test_rows = row_indices(keys, split.test)
    with_fallback = predicted_labels(
        fitted.predictor.predict(decoded.images[test_rows]),
        fitted.thresholds,
        top_class_fallback=True,
    )
    test_truth = label_matrix[test_rows].astype(bool)
    return {
        **fitted.metrics,
        "fallback_hamming_loss": float(np.mean(with_fallback != test_truth)),
        "fallback_subset_accuracy": float(np.mean((with_fallback == test_truth).all(axis=1))),
        "thresholds": fitted.thresholds,
        "split_sizes": split_sizes,
        "epochs_run": fitted.outcome.epochs_run,
        "best_epoch": fitted.outcome.best_epoch,
        "training_seconds": fitted.outcome.seconds,
        "decode_seconds": decode_seconds,
        "model": fitted.model,
    }


def images_per_second(model: Any, images: np.ndarray) -> float:
    """Median throughput of ``Predictor(model)`` over repeats, after one warm-up pass."""
    from mlc_core.model.predict import Predictor

    predictor = Predictor(model, batch_size=INFERENCE_BATCH_SIZE)
    predictor.predict(images[:INFERENCE_BATCH_SIZE])  # traces the graph; not timed
    durations = []
    for _ in range(INFERENCE_REPEATS):
        started = time.perf_counter()
        predictor.predict(images)
        durations.append(time.perf_counter() - started)
    return len(images) / statistics.median(durations)


def run_speed(model: Any, num_labels: int) -> tuple[float, float]:
    """Return images/s of ``model`` and of MobileNetV3Small at 128 px, measured alternately.

    Both see the same random pixels (speed does not depend on content) decoded at their own
    input size. The two are measured in alternating rounds so that a burst of load from other
    processes on the machine hits both, and each figure is the best round's median.
    """
    import keras

    from mlc_core.model.build import build_model, model_image_size

    keras.utils.set_random_seed(0)
    reference = build_model(REFERENCE_BACKBONE, num_labels, REFERENCE_IMAGE_SIZE)
    rng = np.random.default_rng(0)

    def pixels(size: int) -> np.ndarray:
        return rng.integers(0, 256, (INFERENCE_IMAGES, size, size, 3), dtype=np.uint8)

    ours_images = pixels(model_image_size(model))
    reference_images = pixels(REFERENCE_IMAGE_SIZE)
    ours, theirs = [], []
    for _ in range(3):
        ours.append(images_per_second(model, ours_images))
        theirs.append(images_per_second(reference, reference_images))
    return max(ours), max(theirs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = TrainingSettings()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description="Train the default configuration on natural_scene and print test metrics "
        "and inference speed next to MobileNetV3Small at 128 px.",
    )
    parser.add_argument(
        "--data", help=f"data set directory (default: ${DATASET_ENV} or {DEFAULT_DATASET_DIR})"
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--backbone", default=defaults.backbone)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="split and training seed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = TrainingSettings(
        epochs=args.epochs, backbone=args.backbone, image_size=args.image_size, seed=args.seed
    )
    data = load_labels(dataset_dir(args.data))
    print(f"settings: {settings.model_dump()}")
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    result = run_quality(data, settings)
    load_after_training = os.getloadavg()
    ours, reference = run_speed(result["model"], len(result["support"]))
    print()
    print(f"test images                {result['num_images']}")
    print(f"mAP                        {result['mean_average_precision']:.4f}")
    print(f"micro F1                   {result['micro_f1']:.4f}")
    print(f"macro F1                   {result['macro_f1']:.4f}")
    print(f"hamming loss               {result['hamming_loss']:.4f}")
    print(f"subset accuracy            {result['subset_accuracy']:.4f}")
    print(
        f"with top-class fallback    hamming loss {result['fallback_hamming_loss']:.4f}, "
        f"subset accuracy {result['fallback_subset_accuracy']:.4f} (an option, off by default)"
    )
    print(
        "per-class AP               "
        + ", ".join(f"{name} {ap:.3f}" for name, ap in result["average_precision"].items())
    )
    print(
        f"training wall time         {result['training_seconds']:.1f} s "
        f"({result['epochs_run']} epochs, best {result['best_epoch']}; decoding "
        f"{result['decode_seconds']:.1f} s more)"
    )
    print(
        f"load average after training {', '.join(f'{x:.2f}' for x in load_after_training)} "
        f"on {os.cpu_count()} cores"
    )
    print(f"inference {settings.backbone} @ {settings.image_size} px   {ours:.0f} images/s")
    print(f"inference {REFERENCE_BACKBONE} @ {REFERENCE_IMAGE_SIZE} px   {reference:.0f} images/s")
    print(f"speed ratio (default / reference) {ours / reference:.2f}")


if __name__ == "__main__":
    main()
