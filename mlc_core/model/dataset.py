"""The training input pipeline: decode once into memory, then feed tf.data from that array.

Decoded images are held in one uint8 array of ``N * S * S * 3`` bytes (``S`` the image size):
about 48 KiB per image at 128 px, so 20,000 images take about 1 GiB. That array is the cache
across epochs: the datasets below gather batches from it by index and never copy it whole.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from mlc_core.errors import describe_error

logger = logging.getLogger(__name__)

# Augmentation strengths. Colour is much of what tells these scenes apart (the orange of a
# sunset, the blue of the sea, the ochre of a desert), so colour jitter stays modest and hue
# moves by at most ~7 degrees; geometry can vary more freely. The crop share and the mixup
# alpha are training settings (MLC_TRAINING__MIN_CROP_FRACTION, MLC_TRAINING__MIXUP_ALPHA);
# these defaults are theirs.
MIN_CROP_FRACTION = 0.35
BRIGHTNESS_DELTA = 0.1 * 255.0
CONTRAST_RANGE = (0.8, 1.2)
SATURATION_RANGE = (0.8, 1.2)
HUE_DELTA = 0.02
# Beta(alpha, alpha) of the mixup share; 0.4 blends a little more often than not, and
# sometimes half-half.
MIXUP_ALPHA = 0.4
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float64
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


@dataclass
class DecodedImages:
    """The images that decoded, in input order, and why the others did not.

    Attributes:
        keys: the keys of the decoded images, in the order they were given.
        images: uint8 array ``(len(keys), S, S, 3)``; row ``i`` is ``keys[i]``.
        failures: key -> a sentence saying why it could not be read or decoded.
    """

    keys: list[str]
    images: np.ndarray
    failures: dict[str, str] = field(default_factory=dict)


def _default_decode(data: bytes, size: int) -> np.ndarray:
    from mlc_core.images import decode_image

    return decode_image(data, size)


def decode_labeled_images(
    keys: Sequence[str],
    read_bytes: Callable[[str], bytes],
    image_size: int,
    *,
    workers: int = 8,
    decode: Callable[[bytes, int], np.ndarray] | None = None,
) -> DecodedImages:
    """Read and decode images in parallel into one array, recording failures instead of raising.

    Threads are enough: reading waits on I/O and Pillow releases the GIL while decoding. Each
    worker writes straight into a preallocated array, so peak memory is the one array.

    Args:
        keys: the keys to read, in the order the rows should have.
        read_bytes: returns the bytes stored under a key.
        image_size: the square side of the decoded images.
        workers: the number of threads reading and decoding at once.
        decode: ``decode(data, image_size)`` returning uint8 ``(S, S, 3)``; defaults to
            :func:`mlc_core.images.decode_image`.

    Returns:
        The decoded images in the order of ``keys`` (failed keys left out) and, for each
        failed key, the reason: any exception from ``read_bytes`` or ``decode``, or a decoded
        array of the wrong shape or type.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    decode_fn = decode or _default_decode
    expected_shape = (image_size, image_size, 3)
    images = np.empty((len(keys), *expected_shape), dtype=np.uint8)
    succeeded = np.zeros(len(keys), dtype=bool)
    failures: dict[str, str] = {}
    failures_lock = threading.Lock()

    def load(index: int) -> None:
        key = keys[index]
        try:
            decoded = decode_fn(read_bytes(key), image_size)
            if decoded.shape != expected_shape or decoded.dtype != np.uint8:
                raise ValueError(
                    f"decoded to {decoded.dtype} {decoded.shape}, expected uint8 {expected_shape}"
                )
            images[index] = decoded
            succeeded[index] = True
        except Exception as error:
            with failures_lock:
                failures[key] = describe_error(error)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlc-decode") as pool:
        # Draining the iterator waits for every load (and re-raises e.g. KeyboardInterrupt).
        list(pool.map(load, range(len(keys))))

    if failures:
        logger.warning("%d of %d images could not be read or decoded", len(failures), len(keys))
    return _compacted(keys, images, succeeded, failures)


def _compacted(
    keys: Sequence[str], images: np.ndarray, succeeded: np.ndarray, failures: dict[str, str]
) -> DecodedImages:
    """The decoded rows moved to the front, in place, and the failures in input order."""
    kept: list[int] = np.flatnonzero(succeeded).tolist()
    # Row j <= row i, in increasing order, so failures cost no second array.
    for target, source in enumerate(kept):
        if target != source:
            images[target] = images[source]
    ordered_failures = {keys[i]: failures[keys[i]] for i in np.flatnonzero(~succeeded).tolist()}
    return DecodedImages(
        keys=[keys[i] for i in kept], images=images[: len(kept)], failures=ordered_failures
    )


def _check_arrays(images: np.ndarray, labels: np.ndarray | None) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, S, S, 3), got {images.dtype} {images.shape}")
    if labels is not None and (labels.ndim != 2 or len(labels) != len(images)):
        raise ValueError(
            f"expected labels (N, num_labels) with N = {len(images)}, got {labels.shape}"
        )


def _gather(
    images: np.ndarray, labels: np.ndarray | None, indices: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor] | tf.Tensor:
    """Pull the rows at ``indices`` out of the in-memory arrays inside a tf.data map."""
    shape = (None, *images.shape[1:])
    if labels is None:
        batch = tf.numpy_function(lambda i: images[i], [indices], tf.uint8, stateful=False)
        return tf.ensure_shape(tf.cast(batch, tf.float32), shape)
    label_array = labels.astype(np.float32, copy=False)
    batch, batch_labels = tf.numpy_function(
        lambda i: (images[i], label_array[i]), [indices], [tf.uint8, tf.float32], stateful=False
    )
    return (
        tf.ensure_shape(tf.cast(batch, tf.float32), shape),
        tf.ensure_shape(batch_labels, (None, labels.shape[1])),
    )


def _colour_matrices(saturation: tf.Tensor, hue: tf.Tensor) -> tf.Tensor:
    """Per-image 3x3 RGB matrices that scale chroma by ``saturation`` and rotate hue.

    Both act in YIQ space, where luma is one axis and hue an angle in the I/Q plane, so the
    whole colour jitter is one matrix product per pixel instead of an HSV round trip.
    """
    angle = hue * 2.0 * np.pi
    cos, sin = tf.cos(angle) * saturation, tf.sin(angle) * saturation
    one, zero = tf.ones_like(angle), tf.zeros_like(angle)
    chroma = tf.stack(
        [
            tf.stack([one, zero, zero], axis=-1),
            tf.stack([zero, cos, -sin], axis=-1),
            tf.stack([zero, sin, cos], axis=-1),
        ],
        axis=-2,
    )
    to_yiq = tf.constant(_RGB_TO_YIQ, dtype=tf.float32)
    from_yiq = tf.constant(_YIQ_TO_RGB, dtype=tf.float32)
    return tf.einsum("ij,bjk,kl->bil", from_yiq, chroma, to_yiq)


def augment_batch(
    images: tf.Tensor, seed: tf.Tensor, min_crop_fraction: float = MIN_CROP_FRACTION
) -> tf.Tensor:
    """Randomly flip, crop-and-zoom and colour-jitter a float batch in [0, 255].

    Every random draw comes from stateless ops keyed by ``seed`` (shape ``(2,)``), so a
    pipeline that feeds the same seeds produces the same images. The work is two passes over
    the pixels (one resampling, one per-pixel affine colour map) because augmentation runs
    on the same CPU cores as training.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=9)
    count = tf.shape(images)[0]
    height, width = tf.shape(images)[1], tf.shape(images)[2]

    def uniform(index: int, low: float, high: float) -> tf.Tensor:
        return tf.random.stateless_uniform([count], seeds[index], minval=low, maxval=high)

    # A random crop covering min_crop_fraction..1 of each side, resized back to full size;
    # swapping the box's left and right edges mirrors it, so the flip costs nothing extra.
    side_y = uniform(0, min_crop_fraction, 1.0)
    side_x = tf.clip_by_value(side_y * uniform(1, 0.9, 1.1), min_crop_fraction, 1.0)
    top = uniform(2, 0.0, 1.0) * (1.0 - side_y)
    left = uniform(3, 0.0, 1.0) * (1.0 - side_x)
    flip = uniform(4, 0.0, 1.0) < 0.5
    x1 = tf.where(flip, left + side_x, left)
    x2 = tf.where(flip, left, left + side_x)
    boxes = tf.stack([top, x1, top + side_y, x2], axis=1)
    images = tf.image.crop_and_resize(images, boxes, tf.range(count), tf.stack([height, width]))

    # Colour: saturation and hue as a 3x3 matrix, then contrast around the image's mean
    # level and a brightness shift, folded into one affine map per image.
    matrices = _colour_matrices(uniform(5, *SATURATION_RANGE), uniform(6, -HUE_DELTA, HUE_DELTA))
    contrast = uniform(7, *CONTRAST_RANGE)
    brightness = uniform(8, -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)
    mean_colour = tf.reduce_mean(images, axis=[1, 2])
    mean_level = tf.reduce_mean(tf.einsum("bij,bj->bi", matrices, mean_colour), axis=-1)
    offset = (1.0 - contrast) * mean_level + brightness
    scaled = matrices * contrast[:, None, None]
    flat = tf.reshape(images, [count, height * width, 3])
    mapped = tf.matmul(flat, scaled, transpose_b=True) + offset[:, None, None]
    return tf.clip_by_value(tf.reshape(mapped, [count, height, width, 3]), 0.0, 255.0)


def erase_patches(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Strong augmentation: grey out one random box of 20-50 % of each side per image.

    The noisy student learns from the teacher's confident pseudo-labels under heavier noise
    than the teacher saw; a hidden patch makes it use more of the image than one cue.
    Stateless and keyed by ``seed`` like :func:`augment_batch`.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=4)
    count = tf.shape(images)[0]
    height = tf.cast(tf.shape(images)[1], tf.float32)
    width = tf.cast(tf.shape(images)[2], tf.float32)

    def uniform(index: int, low: float, high: float) -> tf.Tensor:
        return tf.random.stateless_uniform([count], seeds[index], minval=low, maxval=high)

    side_y, side_x = uniform(0, 0.2, 0.5) * height, uniform(1, 0.2, 0.5) * width
    top = uniform(2, 0.0, 1.0) * (height - side_y)
    left = uniform(3, 0.0, 1.0) * (width - side_x)
    rows = tf.range(height)[None, :, None]
    columns = tf.range(width)[None, None, :]
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + side_y)[:, None, None])
        & (columns >= left[:, None, None])
        & (columns < (left + side_x)[:, None, None])
    )
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return tf.where(inside[..., None], mean, images)


def mix_batch(
    images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, alpha: float = MIXUP_ALPHA
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup: blend each image and its labels with those of another image of the batch.

    Image ``i`` is paired with image ``count - 1 - i`` (the batch is already shuffled) and
    keeps the larger share ``w = max(l, 1 - l)``, ``l ~ Beta(alpha, alpha)``; its
    labels become ``w * own + (1 - w) * other``. On 1,300 training images a small CNN
    otherwise learns the training set by heart; blended targets keep its probabilities
    graded, which is also what threshold calibration and average precision reward.
    Stateless and keyed by ``seed`` like :func:`augment_batch`.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    count = tf.shape(images)[0]
    first = tf.random.stateless_gamma([count], seeds[0], alpha=alpha)
    second = tf.random.stateless_gamma([count], seeds[1], alpha=alpha)
    share = first / tf.maximum(first + second, 1e-12)
    share = tf.maximum(share, 1.0 - share)
    image_share = share[:, None, None, None]
    mixed_images = image_share * images + (1.0 - image_share) * tf.reverse(images, [0])
    mixed_labels = share[:, None] * labels + (1.0 - share[:, None]) * tf.reverse(labels, [0])
    return mixed_images, mixed_labels


def make_training_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    augment: bool,
    strong: bool = False,
    min_crop_fraction: float = MIN_CROP_FRACTION,
    mixup_alpha: float = MIXUP_ALPHA,
) -> tf.data.Dataset:
    """Return a reusable dataset of shuffled ``(float32 images, float32 labels)`` batches.

    Each iteration (epoch) reshuffles, deterministically for a given ``seed``. Images stay in
    [0, 255]; the model rescales them itself. Every batch has the same size: the
    ``N mod batch_size`` images left over after the last full batch sit out that epoch (other
    ones the next epoch, as the order changes). A smaller last batch would make Keras trace
    its training step a second time, which costs more than those images are worth, and
    would give BatchNorm statistics from a handful of images.

    Args:
        images: uint8 ``(N, S, S, 3)``; kept in memory, not copied.
        labels: multi-hot ``(N, num_labels)``.
        batch_size: images per batch (``N`` when there are fewer images).
        seed: seeds the shuffling and the augmentation.
        augment: flip, crop-and-zoom and colour-jitter each image, then mix pairs of
            images and their labels (:func:`mix_batch`); for training only.
        strong: with ``augment``, also erase a random patch of each image
            (:func:`erase_patches`), for a student learning from pseudo-labels.
        min_crop_fraction: the smallest side of a random crop, as a share of the image's.
        mixup_alpha: ``Beta(alpha, alpha)`` draws the mixup shares; larger blends more.

    Raises:
        ValueError: the arrays have the wrong shapes or there are no images.
    """
    _check_arrays(images, labels)
    if len(images) == 0:
        raise ValueError("cannot make a training dataset from 0 images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    dataset = (
        tf.data.Dataset.range(len(images))
        .shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        .batch(min(batch_size, len(images)), drop_remainder=True)
        .map(lambda indices: _gather(images, labels, indices), num_parallel_calls=tf.data.AUTOTUNE)
    )
    if augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda batch, batch_seed: (
                augment_batch(batch[0], batch_seed, min_crop_fraction),
                batch[1],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        if strong:
            erase_seeds = tf.data.Dataset.random(seed=seed + 2, rerandomize_each_iteration=True)
            dataset = tf.data.Dataset.zip(dataset, erase_seeds.batch(2)).map(
                lambda batch, batch_seed: (erase_patches(batch[0], batch_seed), batch[1]),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        mix_seeds = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip(dataset, mix_seeds.batch(2)).map(
            lambda batch, batch_seed: mix_batch(batch[0], batch[1], batch_seed, mixup_alpha),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(
    images: np.ndarray, labels: np.ndarray | None, *, batch_size: int
) -> tf.data.Dataset:
    """Return the images in their order, batched, as float32 (with labels when given).

    Raises:
        ValueError: the arrays have the wrong shapes.
    """
    _check_arrays(images, labels)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    dataset = (
        tf.data.Dataset.range(len(images))
        .batch(batch_size)
        .map(lambda indices: _gather(images, labels, indices))
    )
    return dataset.prefetch(tf.data.AUTOTUNE)
