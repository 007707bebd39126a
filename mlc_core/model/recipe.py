"""The whole training recipe that ``mlc train`` ships and the quality benchmark measures.

:func:`fit_and_calibrate` builds and trains a model (optionally semi-supervised on unlabelled
images, :mod:`mlc_core.model.noisy_student`), calibrates per-class thresholds on validation
and evaluates on test. The train job and ``benchmarks/quality.py`` both call it, so the
benchmark measures exactly what the job does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from mlc_core.model.build import at_size, weights_fit_both_sizes
from mlc_core.model.dataset import DecodedImages
from mlc_core.model.metrics import evaluate_predictions
from mlc_core.model.noisy_student import Teacher, train_noisy_student
from mlc_core.model.predict import PREDICT_BATCH_SIZE, Predictor
from mlc_core.model.split import DataSplit
from mlc_core.model.thresholds import calibrate_thresholds
from mlc_core.model.training import EpochReport, TrainingOutcome, build_and_train, row_indices

if TYPE_CHECKING:
    from mlc_core.settings import TrainingSettings

logger = logging.getLogger(__name__)


@dataclass
class FittedModel:
    """The result of :func:`fit_and_calibrate`: a trained model, its thresholds and test scores.

    Attributes:
        model: the trained model, holding the weights of its best epoch.
        predictor: a :class:`Predictor` of ``model``, already traced, for further scoring.
        outcome: the training loop's epochs and time (the student's, when semi-supervised).
        thresholds: one per class, calibrated on the validation rows.
        threshold_notes: a sentence for each class whose threshold fell back or was clipped.
        metrics: :func:`evaluate_predictions` of the test rows at ``thresholds``, plus
            ``validation_tag_rates`` (class -> share of validation images tagged).
        semi_supervised: what the unlabelled images contributed (see :func:`fit_and_calibrate`).
    """

    model: keras.Model
    predictor: Predictor
    outcome: TrainingOutcome
    thresholds: list[float]
    threshold_notes: list[str]
    metrics: dict[str, Any]
    semi_supervised: dict[str, Any] = field(default_factory=dict)


def fit_and_calibrate(
    decoded: DecodedImages,
    labels: np.ndarray,
    split: DataSplit,
    classes: Sequence[str],
    settings: TrainingSettings,
    *,
    on_epoch_end: Callable[[EpochReport], None] | None = None,
    started: float | None = None,
    unlabelled: np.ndarray | None = None,
    teacher: Teacher | None = None,
    scoring: DecodedImages | None = None,
) -> FittedModel:
    """Build, train, calibrate and evaluate one model the way ``mlc train`` does.

    The model is built from ``settings`` after seeding with ``settings.seed``, so the same
    data and settings give the same initial weights. It trains on the train rows with
    augmentation and early stopping on the validation rows; per-class thresholds are then
    calibrated on the validation rows and the test rows are evaluated at those thresholds.

    With ``settings.semi_supervised`` and unlabelled images, the ``teacher`` (default: a first
    model trained here on the train rows) gives pseudo-labels (its probabilities, or 1 / 0
    where it is confident: ``settings.semi_supervised_targets``) to the unlabelled images for
    the classes it shares with ``classes``, and the returned model is a student
    trained on labels and pseudo-labels with strong augmentation; with
    ``settings.semi_supervised_rounds`` above 1, each student then teaches the next one the
    same way. Without unlabelled images (or with the option off) this is exactly the
    supervised path.

    Args:
        decoded: the images, decoded at ``settings.image_size``, and their keys.
        labels: 1/0/NaN (unknown) ``(N, num_labels)``, row ``i`` for ``decoded.keys[i]``,
            columns in the order of ``classes``.
        split: which keys train, validate and test; every key must be in ``decoded.keys``.
        classes: the class names, one per label column.
        settings: backbone, weights, loss, epochs, time budget, threshold strategy.
        on_epoch_end: called with each epoch's report, e.g. to draw progress.
        started: a ``time.perf_counter()`` reading that ``settings.time_budget_minutes``
            counts from (the train job passes its own start, so decoding counts too).
        unlabelled: uint8 images at the same size without labels (never test images).
        teacher: the model that pseudo-labels them, e.g. the champion.
        scoring: the validation and test images decoded at ``settings.scoring_image_size``,
            needed when it differs from ``settings.image_size``: the trained weights are
            then copied into a model of that size, which is calibrated, evaluated and
            returned (it is the one that scores).

    Returns:
        The trained model, its predictor, the training outcome, the thresholds and notes, the
        test metrics and, in ``semi_supervised``, ``unlabelled_images`` (offered),
        ``used_images`` (those with at least one pseudo-label from ``teacher``),
        ``pseudo_labelled_classes``, ``classes_without_teacher``, ``rounds`` (students
        trained) and ``used_images_by_round``, or ``note`` saying why training stayed
        supervised (or kept fewer students).

    Raises:
        ValueError: the validation split is empty, an argument is out of range, or the model
            scores at another size than it trains at and ``scoring`` is missing.
        KeyError: ``split`` names a key that is not in ``decoded.keys`` (or, for validation
            and test, in ``scoring.keys``).
        TrainingBudgetTooSmall: the budget ended before the first epoch did.
    """
    started = time.perf_counter() if started is None else started
    _check_scoring_side(settings, scoring, labels.shape[1])
    images = decoded.images
    train_rows = row_indices(decoded.keys, split.train)
    validation_rows = row_indices(decoded.keys, split.validation)
    test_rows = row_indices(decoded.keys, split.test)
    validation = (images[validation_rows], labels[validation_rows])
    train = (images[train_rows], labels[train_rows])
    if not settings.semi_supervised:
        semi: dict[str, Any] = {"note": "semi-supervised training is off"}
        model, outcome = build_and_train(train, validation, settings, on_epoch_end, started)
    elif unlabelled is None or len(unlabelled) == 0:
        semi = {"note": "no unlabelled images in the store: trained on the labels alone"}
        logger.info("semi-supervised: %s", semi["note"])
        model, outcome = build_and_train(train, validation, settings, on_epoch_end, started)
    else:
        model, outcome, semi = train_noisy_student(
            train, validation, unlabelled, list(classes), settings, on_epoch_end, started, teacher
        )
    if scoring is not None and settings.scoring_image_size != settings.image_size:
        # The model that scores works at the scoring side; so do its thresholds and metrics.
        model = at_size(
            model, settings.backbone, settings.scoring_image_size, settings.dropout_rate
        )
        images = scoring.images
        validation_rows = row_indices(scoring.keys, split.validation)
        test_rows = row_indices(scoring.keys, split.test)
        # Rows of `labels` follow `decoded.keys`; the scoring images may be in another order.
        labels = labels[row_indices(decoded.keys, scoring.keys)]
    return _calibrated(
        model, outcome, images, labels, validation_rows, test_rows, classes, settings, semi
    )


def _check_scoring_side(
    settings: TrainingSettings, scoring: DecodedImages | None, num_labels: int
) -> None:
    """Refuse, before training, a scoring side without its images, or one whose model would
    hold differently shaped weights than the training side's."""
    sides = (settings.image_size, settings.scoring_image_size)
    if sides[0] == sides[1]:
        return
    if scoring is None:
        raise ValueError(
            f"the model scores at {sides[1]} px: pass the validation and test images decoded "
            f"at that size (scoring=)"
        )
    if not weights_fit_both_sizes(settings.backbone, num_labels, sides):
        raise ValueError(
            f"a {settings.backbone} model trained at {sides[0]} px cannot score at {sides[1]} "
            f"px (its weights differ in shape); set MLC_TRAINING__SCORING_SCALE=1 or a larger "
            f"MLC_TRAINING__IMAGE_SIZE"
        )


def _calibrated(
    model: keras.Model,
    outcome: TrainingOutcome,
    images: np.ndarray,
    labels: np.ndarray,
    validation_rows: np.ndarray,
    test_rows: np.ndarray,
    classes: Sequence[str],
    settings: TrainingSettings,
    semi: dict[str, Any],
) -> FittedModel:
    predictor = Predictor(model, batch_size=PREDICT_BATCH_SIZE)
    validation_probabilities = predictor.predict(images[validation_rows])
    calibration = calibrate_thresholds(
        labels[validation_rows],
        validation_probabilities,
        strategy=settings.threshold_strategy,
        target_precision=settings.target_precision,
        classes=list(classes),
    )
    thresholds = [float(t) for t in calibration.thresholds]
    metrics = evaluate_predictions(
        labels[test_rows], predictor.predict(images[test_rows]), thresholds, list(classes)
    )
    metrics["validation_tag_rates"] = validation_tag_rates(
        validation_probabilities, thresholds, classes
    )
    return FittedModel(
        model=model,
        predictor=predictor,
        outcome=outcome,
        thresholds=thresholds,
        threshold_notes=list(calibration.notes),
        metrics=metrics,
        semi_supervised=semi,
    )


def validation_tag_rates(
    probabilities: np.ndarray, thresholds: Sequence[float], classes: Sequence[str]
) -> dict[str, float]:
    """Class -> the fraction of validation images tagged with it at ``thresholds``.

    Scoring compares the tag rates of the images it scores with these (drift, by PSI).
    """
    tagged = (probabilities >= np.asarray(thresholds, dtype=np.float64)).mean(axis=0)
    return {name: round(float(rate), 6) for name, rate in zip(classes, tagged, strict=True)}
