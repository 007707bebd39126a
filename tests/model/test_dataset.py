from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mlc_core.errors import ImageDecodeError, ObjectNotFound
from mlc_core.model.dataset import (
    augment_batch,
    decode_labeled_images,
    make_eval_dataset,
    make_training_dataset,
    mix_batch,
)


def _png(colour: tuple[int, int, int], side: int = 20) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _grey_image(level: int) -> np.ndarray:
    return np.full((8, 8, 3), level, dtype=np.uint8)


def test_decode_records_failures_and_keeps_the_order_of_the_rest() -> None:
    store = {f"k{i}": bytes([i]) for i in range(6)}
    del store["k1"]

    def read_bytes(key: str) -> bytes:
        if key not in store:
            raise ObjectNotFound(key, "the test store")
        return store[key]

    def decode(data: bytes, size: int) -> np.ndarray:
        if data == bytes([4]):
            raise ImageDecodeError("the file is not an image")
        return np.full((size, size, 3), data[0], dtype=np.uint8)

    decoded = decode_labeled_images(
        [f"k{i}" for i in range(6)], read_bytes, 8, workers=3, decode=decode
    )

    assert decoded.keys == ["k0", "k2", "k3", "k5"]
    assert [int(image[0, 0, 0]) for image in decoded.images] == [0, 2, 3, 5]
    assert decoded.images.shape == (4, 8, 8, 3)
    assert decoded.failures == {
        "k1": "object 'k1' does not exist in the test store",
        "k4": "the file is not an image",
    }


def test_decode_treats_an_array_of_the_wrong_shape_as_a_failure() -> None:
    decoded = decode_labeled_images(
        ["a"], lambda key: b"x", 8, decode=lambda data, size: np.zeros((4, 4, 3), np.uint8)
    )

    assert decoded.keys == []
    assert "expected uint8 (8, 8, 3)" in decoded.failures["a"]


def test_decode_uses_mlc_images_by_default() -> None:
    files = {"red.png": _png((250, 0, 0)), "text.png": b"not an image at all"}

    decoded = decode_labeled_images(list(files), files.__getitem__, 16)

    assert decoded.keys == ["red.png"]
    assert decoded.images.shape == (1, 16, 16, 3)
    assert decoded.images[0, 8, 8].tolist() == [250, 0, 0]
    assert list(decoded.failures) == ["text.png"]


def test_training_dataset_yields_full_float_batches_of_distinct_images() -> None:
    images = np.stack([_grey_image(level) for level in range(10)])
    labels = np.eye(10, dtype=np.float32)[:, :3]

    dataset = make_training_dataset(images, labels, batch_size=4, seed=1, augment=False)

    batches = list(dataset)
    assert [len(batch_images) for batch_images, _ in batches] == [4, 4]
    seen_images = np.concatenate([np.asarray(b) for b, _ in batches])
    seen_labels = np.concatenate([np.asarray(lab) for _, lab in batches])
    assert seen_images.dtype == np.float32
    order = seen_images[:, 0, 0, 0].astype(int)
    assert len(set(order)) == 8
    np.testing.assert_array_equal(seen_labels, labels[order])


def test_training_dataset_makes_one_batch_when_there_are_fewer_images_than_a_batch() -> None:
    images = np.stack([_grey_image(level) for level in range(3)])

    dataset = make_training_dataset(
        images, np.zeros((3, 1), np.float32), batch_size=8, seed=1, augment=False
    )

    assert [len(batch_images) for batch_images, _ in dataset] == [3]


def test_training_dataset_reshuffles_each_epoch_and_repeats_for_the_same_seed() -> None:
    images = np.stack([_grey_image(level) for level in range(32)])
    labels = np.zeros((32, 1), dtype=np.float32)

    def epochs(seed: int) -> list[list[int]]:
        dataset = make_training_dataset(images, labels, batch_size=32, seed=seed, augment=False)
        return [
            np.asarray(batch)[:, 0, 0, 0].astype(int).tolist() for batch, _ in dataset.repeat(2)
        ]

    first_run = epochs(5)

    assert first_run[0] != first_run[1]
    assert epochs(5) == first_run


def test_augmentation_is_reproducible_for_a_seed_and_stays_in_range() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 24, 24, 3), dtype=np.uint8)
    labels = np.zeros((6, 2), dtype=np.float32)

    def first_batch(seed: int) -> np.ndarray:
        dataset = make_training_dataset(images, labels, batch_size=6, seed=seed, augment=True)
        return np.asarray(next(iter(dataset))[0])

    augmented = first_batch(3)

    np.testing.assert_array_equal(first_batch(3), augmented)
    assert augmented.shape == (6, 24, 24, 3)
    assert augmented.min() >= 0.0 and augmented.max() <= 255.0
    plain = np.asarray(
        next(iter(make_training_dataset(images, labels, batch_size=6, seed=3, augment=False)))[0]
    )
    assert not np.allclose(augmented, plain)


def test_augmentation_keeps_the_colour_of_a_plain_image_recognizable() -> None:
    orange = np.broadcast_to(np.array([240, 120, 20], np.uint8), (16, 16, 16, 3)).copy()

    dataset = make_training_dataset(
        orange, np.zeros((16, 1), np.float32), batch_size=16, seed=0, augment=True
    )
    mean_colours = np.asarray(next(iter(dataset))[0]).mean(axis=(1, 2))

    assert np.all(mean_colours[:, 0] > mean_colours[:, 1])
    assert np.all(mean_colours[:, 1] > mean_colours[:, 2])


def test_eval_dataset_keeps_the_order_with_or_without_labels() -> None:
    images = np.stack([_grey_image(level) for level in range(5)])
    labels = np.arange(5, dtype=np.float32)[:, None]

    with_labels = list(make_eval_dataset(images, labels, batch_size=2))
    without_labels = list(make_eval_dataset(images, None, batch_size=2))

    assert np.concatenate([lab for _, lab in with_labels])[:, 0].tolist() == [0, 1, 2, 3, 4]
    order = np.concatenate([np.asarray(batch) for batch in without_labels])[:, 0, 0, 0]
    assert order.tolist() == [0, 1, 2, 3, 4]


def test_training_dataset_rejects_labels_of_another_length() -> None:
    images = np.zeros((3, 8, 8, 3), np.uint8)

    with pytest.raises(ValueError, match="N = 3"):
        make_training_dataset(images, np.zeros((2, 1)), batch_size=2, seed=0, augment=False)


def test_mixup_blends_images_and_labels_in_the_same_share_keeping_the_own_one_larger() -> None:
    levels = np.array([0.0, 40.0, 200.0, 250.0], dtype=np.float32)
    images = np.broadcast_to(levels[:, None, None, None], (4, 2, 2, 3)).copy()
    labels = np.eye(4, dtype=np.float32)

    mixed_images, mixed_labels = (np.asarray(t) for t in mix_batch(images, labels, [3, 4]))

    partner = levels[::-1]
    own_share = mixed_labels[np.arange(4), np.arange(4)]
    assert np.all(own_share >= 0.5)
    np.testing.assert_allclose(mixed_labels.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        mixed_images[:, 0, 0, 0], own_share * levels + (1 - own_share) * partner, rtol=1e-5
    )


def test_a_larger_mixup_alpha_blends_more() -> None:
    images = np.zeros((512, 1, 1, 3), dtype=np.float32)
    labels = np.eye(512, dtype=np.float32)

    def mean_own_share(alpha: float) -> float:
        _, mixed = mix_batch(images, labels, [5, 6], alpha)
        return float(np.mean(np.diagonal(np.asarray(mixed))))

    assert mean_own_share(2.0) < mean_own_share(0.05) - 0.1


def test_a_smaller_crop_fraction_zooms_in_further() -> None:
    # A left-to-right ramp: a crop shows a narrower range of it, a flip only mirrors it.
    ramp = np.broadcast_to(np.linspace(0, 255, 16, dtype=np.float32)[None, :, None], (16, 16, 3))
    images = np.repeat(ramp[None], 64, axis=0).copy()

    def mean_span(min_crop_fraction: float) -> float:
        batch = np.asarray(augment_batch(images, [1, 2], min_crop_fraction))
        row = batch[:, 8, :, :].mean(axis=-1)
        return float(np.mean(np.abs(row[:, -1] - row[:, 0])))

    assert mean_span(1.0) > mean_span(0.3) + 30
