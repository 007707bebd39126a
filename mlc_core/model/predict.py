"""Fast, repeatable inference on pre-decoded image batches."""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf

from mlc_core.model.build import model_image_size, model_num_labels

# The batch size training and the champion comparison predict with (scoring's passes are
# MLC_SCORING__INFERENCE_BATCH_SIZE); the batch size does not change the probabilities.
PREDICT_BATCH_SIZE = 64

logger = logging.getLogger(__name__)


def use_inference_threads(threads: int) -> bool:
    """Run this process's TensorFlow ops on ``threads`` threads (0 leaves them as they are).

    One thread scores at less CPU per image in a pipeline whose readers need the other cores:
    two threads splitting each operation wait for each other whenever a reader holds a core.
    TensorFlow fixes its thread pools when it first runs an operation, so in a process that
    trained first, this keeps the threads it has (and returns ``False``).
    """
    if threads == 0 or tf.config.threading.get_intra_op_parallelism_threads() == threads:
        return True
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        logger.info(
            "TensorFlow already runs in this process: inference keeps its threads instead of "
            "%d (MLC_SCORING__INFERENCE_THREADS)",
            threads,
        )
        return False
    return True


class Predictor:
    """Scores uint8 image arrays with one model, tracing its inference graph once.

    ``model.predict`` rebuilds its data pipeline on every call and ``model(x)`` runs eagerly;
    both cost more than the network itself for the small batches a scoring loop feeds. Here
    the forward pass is a ``tf.function`` with a fixed input signature, and every chunk is
    padded to ``batch_size`` so the CPU kernels always see the same shapes.

    Attributes:
        image_size: the square side the images must have.
        num_labels: the number of probabilities per image.
        batch_size: the number of images per forward pass.
    """

    def __init__(self, model: keras.Model, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self.image_size = model_image_size(model)
        self.num_labels = model_num_labels(model)
        signature = [
            tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.uint8, name="images")
        ]

        @tf.function(input_signature=signature, reduce_retracing=True)
        def forward(images: tf.Tensor) -> tf.Tensor:
            return tf.cast(model(tf.cast(images, tf.float32), training=False), tf.float32)

        self._forward = forward

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return the probabilities of ``images``.

        Args:
            images: uint8 array of shape ``(N, image_size, image_size, 3)``, any ``N``.

        Returns:
            float32 array of shape ``(N, num_labels)``, rows in the order of ``images``.

        Raises:
            ValueError: the array has the wrong dtype or shape.
        """
        expected = (self.image_size, self.image_size, 3)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                f"expected uint8 images of shape (N, {', '.join(map(str, expected))}), "
                f"got {images.dtype} {images.shape}; decode them at size {self.image_size}"
            )
        count = len(images)
        output = np.empty((count, self.num_labels), dtype=np.float32)
        for start in range(0, count, self.batch_size):
            chunk = images[start : start + self.batch_size]
            size = len(chunk)
            if size < self.batch_size:
                padded = np.zeros((self.batch_size, *expected), dtype=np.uint8)
                padded[:size] = chunk
                chunk = padded
            output[start : start + size] = self._forward(tf.constant(chunk)).numpy()[:size]
        return output
