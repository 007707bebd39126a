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
import hashlib
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
# The split is fixed whatever the training seed: seeds measure training variance alone.
SPLIT_SEED = 1234
# The imbalanced variant keeps this share of images carrying the rare class.
RARE_SHARE = 0.05
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


@dataclass
class Prepared:
    """The benchmark's images decoded once, their label matrix and the fixed split."""

    keys: list[str]
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    split: Any
    decode_seconds: float
    # The same images (same order) at the size the model scores at, when that differs.
    scoring_images: np.ndarray | None = None


def prepare(
    data: LabeledDataset,
    image_size: int,
    validation_fraction: float,
    scoring_image_size: int | None = None,
) -> Prepared:
    """Decode every image once (and once more at ``scoring_image_size`` if it differs) and
    split with the fixed seed ``SPLIT_SEED``."""
    from mlc_core.model.dataset import decode_labeled_images
    from mlc_core.model.split import split_dataset

    vocabulary = LabelVocabulary.from_tags(tag for tags in data.tags for tag in tags)
    started = time.perf_counter()
    decoded = decode_labeled_images(data.keys, data.read_bytes, image_size)
    decode_seconds = time.perf_counter() - started
    if decoded.failures:
        print(f"skipped {len(decoded.failures)} unreadable images")
    scoring_images = None
    if scoring_image_size not in (None, image_size):
        assert scoring_image_size is not None
        scoring_images = decode_labeled_images(
            decoded.keys, data.read_bytes, scoring_image_size
        ).images
    tags_of = dict(zip(data.keys, data.tags, strict=True))
    labels = np.stack([vocabulary.to_multi_hot(tags_of[key]) for key in decoded.keys])
    split = split_dataset(
        decoded.keys,
        labels,
        validation_fraction=validation_fraction,
        test_fraction=TEST_FRACTION,
        seed=SPLIT_SEED,
    )
    print(
        f"{len(decoded.keys)} images, classes {', '.join(vocabulary.classes)}; split train "
        f"{len(split.train)} / validation {len(split.validation)} / test {len(split.test)} "
        f"(seed {SPLIT_SEED}); decoded at {image_size} px in {decode_seconds:.1f} s"
    )
    return Prepared(
        decoded.keys,
        decoded.images,
        labels,
        list(vocabulary.classes),
        split,
        decode_seconds,
        scoring_images,
    )


def labelled_share(train: list[str], fraction: float) -> list[str]:
    """The first ``fraction`` of the train keys in a fixed hash order: the labelled ones."""
    ordered = sorted(train, key=lambda key: hashlib.sha256(f"labels:{key}".encode()).digest())
    return sorted(ordered[: max(1, round(fraction * len(train)))])


def run_quality(
    prepared: Prepared,
    settings: TrainingSettings,
    *,
    label_fraction: float = 1.0,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train ``settings`` as the train job does on a share of the training labels.

    The other training images are offered as unlabelled images (used only when
    ``settings.semi_supervised``); validation and test are always fully labelled.

    Returns:
        The test metrics (``evaluate_predictions``) plus the epochs run, the training
        seconds, what the unlabelled images contributed, and the trained model.
    """
    from mlc_core.model.dataset import DecodedImages
    from mlc_core.model.recipe import fit_and_calibrate
    from mlc_core.model.split import DataSplit
    from mlc_core.model.training import EpochReport, row_indices

    split = prepared.split
    labelled = labelled_share(split.train, label_fraction)
    unlabelled_keys = sorted(set(split.train) - set(labelled))
    part = DataSplit(labelled, split.validation, split.test)

    def progress(report: EpochReport) -> None:
        if verbose:
            print(
                f"  epoch {report.epoch:3d}/{report.epochs}: loss {report.loss:.4f}  "
                f"validation mAP {report.validation_map:.4f}  ({report.seconds:.1f} s)",
                flush=True,
            )

    started = time.perf_counter()
    fitted = fit_and_calibrate(
        DecodedImages(prepared.keys, prepared.images),
        prepared.labels,
        part,
        prepared.classes,
        settings,
        on_epoch_end=progress,
        unlabelled=prepared.images[row_indices(prepared.keys, unlabelled_keys)],
        scoring=None
        if prepared.scoring_images is None
        else DecodedImages(prepared.keys, prepared.scoring_images),
    )
    seconds = time.perf_counter() - started
    # Every natural_scene image carries a class, so the top-class fallback (off by default:
    # users' images may carry none) is measured here as what it would give on such data.
    test_rows = row_indices(prepared.keys, split.test)
    scored = prepared.images if prepared.scoring_images is None else prepared.scoring_images
    with_fallback = predicted_labels(
        fitted.predictor.predict(scored[test_rows]),
        fitted.thresholds,
        top_class_fallback=True,
    )
    test_truth = prepared.labels[test_rows].astype(bool)
    return {
        **fitted.metrics,
        "fallback_hamming_loss": float(np.mean(with_fallback != test_truth)),
        "fallback_subset_accuracy": float(np.mean((with_fallback == test_truth).all(axis=1))),
        "labelled_train_images": len(labelled),
        "semi_supervised": fitted.semi_supervised,
        "epochs_run": fitted.outcome.epochs_run,
        "best_epoch": fitted.outcome.best_epoch,
        "validation_map": max(
            (r.validation_map for r in fitted.outcome.history if r.validation_map is not None),
            default=float("nan"),
        ),
        "training_seconds": seconds,
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
        "(default part), a learning curve (curve) and an imbalance comparison (imbalance).",
    )
    parser.add_argument(
        "parts",
        nargs="*",
        choices=["default", "curve", "imbalance"],
        default=["default"],
        help="which parts to run, one at a time or several (default: default)",
    )
    parser.add_argument(
        "--data", help=f"data set directory (default: ${DATASET_ENV} or {DEFAULT_DATASET_DIR})"
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--backbone", default=defaults.backbone)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other training setting, e.g. --set mixup_alpha=0.2 (repeatable)",
    )
    parser.add_argument("--rare-class", default="sea")
    parser.add_argument(
        "--losses", nargs="+", default=["bce", "weighted_bce", "focal", "asymmetric"]
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    malformed = [item for item in args.set if "=" not in item]
    if malformed:
        raise SystemExit(f"--set takes NAME=VALUE, got {', '.join(malformed)}")
    overrides = dict(item.split("=", 1) for item in args.set)
    settings = TrainingSettings(
        epochs=args.epochs, backbone=args.backbone, image_size=args.image_size, **overrides
    )
    data = load_labels(dataset_dir(args.data))
    print(f"settings: {settings.model_dump()}")
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    from benchmarks.quality_parts import part_curve, part_default, part_imbalance

    prepared = prepare(
        data, settings.image_size, settings.validation_fraction, settings.scoring_image_size
    )
    if "default" in args.parts:
        part_default(prepared, settings, args.seeds)
    if "curve" in args.parts:
        part_curve(prepared, settings, args.fractions)
    if "imbalance" in args.parts:
        part_imbalance(prepared, settings, args.rare_class, args.losses)
    print(
        f"\nload average at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
