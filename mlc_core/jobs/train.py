"""Train a model version from the stored labels, measure it, and promote it only if it earns it.

The steps, and why they are in this order:
1. Gather the labelled images that still exist in the store, with their etags, so the version
   records exactly which data made it (a hash of (key, etag, tags)).
2. Choose the classes (tags with enough positives), decode every image once through
   ``mlc_core.images`` (the same code scoring uses), skipping and counting unreadable ones.
3. Split deterministically. Images in the champion's test split stay in test, so the candidate
   never trains on the images it is judged on, and both are compared on the same images.
4. Train, calibrate per-class thresholds on validation, evaluate on test.
5. Write the model file, its card and its split to the store, then register the version and
   the promotion decision in one transaction. Nothing reaches the database before the files
   exist, and a failure before step 5 writes nothing at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from mlc_core.db.model_versions import (
    create_model_version,
    get_champion,
    next_version_name,
    promote_model_version,
    set_decision,
)
from mlc_core.db.models import ModelVersion, Run
from mlc_core.db.queries import labels_by_image
from mlc_core.db.runs import finish_run, start_run
from mlc_core.errors import ObjectNotFound, TrainingDataError, describe_error
from mlc_core.jobs.locks import TRAINING_LOCK, holding_locks
from mlc_core.jobs.store_paths import model_paths
from mlc_core.jobs.workspace import Workspace
from mlc_core.labels import LabelVocabulary
from mlc_core.model.artifacts import (
    ModelCard,
    deserialize_model,
    library_versions,
    serialize_model,
    sha256_hex,
)
from mlc_core.model.backbones import get_backbone
from mlc_core.model.dataset import decode_labeled_images
from mlc_core.model.metrics import evaluate_predictions
from mlc_core.model.predict import Predictor
from mlc_core.model.promotion import decide_promotion
from mlc_core.model.split import DataSplit, split_dataset
from mlc_core.model.training import EpochReport, fit_and_calibrate, row_indices
from mlc_core.settings import TrainingSettings
from mlc_core.storage import key_for_uri

logger = logging.getLogger(__name__)

# Below this many decodable labelled images a split leaves too little to learn or measure.
MIN_TRAINING_IMAGES = 12


@dataclass
class TrainingReport:
    """What a training run did and decided; plain data, safe to log or return from a flow."""

    version: str
    status: str
    decision: str
    classes: list[str]
    thresholds: list[float]
    metrics: dict[str, Any]
    champion_comparison: dict[str, Any] | None
    left_out_classes: dict[str, int]
    threshold_notes: list[str]
    labelled_images: int
    missing_images: int
    unreadable_images: dict[str, str]
    split_sizes: dict[str, int]
    epochs_run: int
    best_epoch: int
    training_seconds: float
    artifact_uri: str
    data_snapshot: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _LabelledImage:
    key: str
    etag: str
    positives: frozenset[str]


def _gather_labelled_images(workspace: Workspace) -> tuple[list[_LabelledImage], int]:
    with workspace.transaction() as session:
        labels = labels_by_image(session)
    wanted: dict[str, frozenset[str]] = {}
    for uri, tags in labels.items():
        key = key_for_uri(workspace.store, uri)
        if key is not None:
            wanted[key] = frozenset(tag for tag, positive in tags.items() if positive)
    found: list[_LabelledImage] = []
    for prefix in _listing_prefixes(wanted):
        for info in workspace.store.iter_objects(prefix):
            positives = wanted.pop(info.key, None)
            if positives is not None:
                found.append(_LabelledImage(info.key, info.etag, positives))
    found.sort(key=lambda image: image.key)
    return found, len(wanted)


def _listing_prefixes(keys: Iterable[str]) -> list[str]:
    # Listing each top-level folder that holds labelled images streams far fewer objects than
    # the whole store, and a request per image would be slower still.
    return sorted({key.split("/", 1)[0] + "/" if "/" in key else key for key in keys})


def _data_snapshot(images: list[_LabelledImage]) -> dict[str, Any]:
    digest = hashlib.sha256()
    for image in images:
        digest.update(json.dumps([image.key, image.etag, sorted(image.positives)]).encode())
    return {"count": len(images), "sha256": digest.hexdigest()}


def _choose_classes(
    images: list[_LabelledImage], min_positives: int
) -> tuple[LabelVocabulary, dict[str, int]]:
    counts = Counter(tag for image in images for tag in image.positives)
    kept = [tag for tag, count in counts.items() if count >= min_positives]
    left_out = {tag: count for tag, count in sorted(counts.items()) if count < min_positives}
    if len(kept) < 2:
        raise TrainingDataError(
            f"only {len(kept)} tag(s) ({', '.join(sorted(kept)) or 'none'}) have at least "
            f"{min_positives} positive images among {len(images)} labelled images; a multilabel "
            "model needs at least two: import more labels (`mlc labels import`) or lower "
            "MLC_TRAINING__MIN_POSITIVES"
        )
    return LabelVocabulary.from_tags(kept), left_out


def _read_json(workspace: Workspace, key: str) -> Any:
    return json.loads(workspace.store.get(key))


def _champion_test_keys(workspace: Workspace, champion_version: str) -> list[str]:
    try:
        split = _read_json(workspace, model_paths(champion_version).split)
    except ObjectNotFound:
        logger.warning(
            "champion %s has no stored split; comparing on the new test split", champion_version
        )
        return []
    return list(split.get("test", []))


def _split_keeping_champion_test(
    keys: list[str],
    label_matrix: np.ndarray,
    champion_test: set[str],
    settings: TrainingSettings,
) -> DataSplit:
    fresh = [i for i, key in enumerate(keys) if key not in champion_test]
    split = split_dataset(
        [keys[i] for i in fresh],
        label_matrix[fresh],
        validation_fraction=settings.validation_fraction,
        test_fraction=settings.test_fraction,
        seed=settings.seed,
    )
    kept_test = [key for key in keys if key in champion_test]
    return DataSplit(split.train, split.validation, sorted(split.test + kept_test))


def _compare_with_champion(
    workspace: Workspace,
    champion: ModelVersion,
    candidate: Predictor,
    vocabulary: LabelVocabulary,
    thresholds: list[float],
    keys: list[str],
    images: np.ndarray,
    labelled: dict[str, frozenset[str]],
    champion_test: list[str],
) -> tuple[dict[str, Any], dict[str, Any], list[str]] | None:
    """Evaluate candidate and champion on the champion's test images that are still usable.

    Returns:
        Both models' metrics and the keys they were judged on; None when none of the champion's
        test images is still labelled and readable.
    """
    decodable = set(keys)
    rows = row_indices(keys, [key for key in champion_test if key in labelled and key in decodable])
    evaluated = [keys[i] for i in rows]
    if not evaluated:
        return None
    batch = images[rows]
    candidate_metrics = evaluate_predictions(
        np.stack([vocabulary.to_multi_hot(labelled[key]) for key in evaluated]),
        candidate.predict(batch),
        thresholds,
        list(vocabulary.classes),
    )
    champion_vocabulary = LabelVocabulary(tuple(champion.classes))
    model_bytes = workspace.store.get(key_for_uri(workspace.store, champion.artifact_uri) or "")
    champion_model = deserialize_model(model_bytes, champion.artifact_sha256)
    if champion.image_size != batch.shape[1]:
        # Each model sees the images as it would when scoring: decoded at its own input size.
        redecoded = decode_labeled_images(
            evaluated,
            workspace.store.get,
            champion.image_size,
            workers=workspace.settings.scoring.read_workers,
        )
        # The same bytes decoded a moment ago; an image deleted meanwhile leaves both models'
        # comparison, so they are judged on the same images.
        kept = set(redecoded.keys)
        if len(kept) != len(evaluated):
            keep_rows = [i for i, key in enumerate(evaluated) if key in kept]
            evaluated = [evaluated[i] for i in keep_rows]
            candidate_metrics = evaluate_predictions(
                np.stack([vocabulary.to_multi_hot(labelled[key]) for key in evaluated]),
                candidate.predict(batch[keep_rows]),
                thresholds,
                list(vocabulary.classes),
            )
        champion_batch = redecoded.images[row_indices(list(redecoded.keys), evaluated)]
    else:
        champion_batch = batch
    champion_metrics = evaluate_predictions(
        np.stack([champion_vocabulary.to_multi_hot(labelled[key]) for key in evaluated]),
        Predictor(champion_model, batch_size=64).predict(champion_batch),
        list(champion.thresholds),
        list(champion_vocabulary.classes),
    )
    return candidate_metrics, champion_metrics, evaluated


def train_model_version(
    workspace: Workspace,
    settings: TrainingSettings,
    *,
    on_epoch_end: Callable[[EpochReport], None] | None = None,
) -> TrainingReport:
    """Train, evaluate and register a new model version; promote it if it is better.

    Args:
        workspace: the database and store to read labels and images from and write to.
        settings: backbone, image size, epochs and the promotion rules.
        on_epoch_end: called after each epoch (for progress bars and flow logs).

    Returns:
        The new version's report, including the promotion decision and its reason.

    Raises:
        TrainingDataError: too few labelled images or classes; nothing is written.
    """
    # One training at a time, however it was started: two would race for the next version.
    with holding_locks(workspace, [TRAINING_LOCK], purpose="a training (mlc train)") as held:
        with workspace.transaction() as session:
            run_id = start_run(session, "train", {"settings": settings.model_dump()}).id
            held.attach_run(session, run_id)
        try:
            report = _train(workspace, settings, on_epoch_end)
        except BaseException as error:
            with workspace.transaction() as session:
                run = session.get_one(Run, run_id)
                finish_run(session, run, status="failed", counts={}, error=describe_error(error))
            raise
        _finish_training(workspace, run_id, report)
    return report


def _finish_training(workspace: Workspace, run_id: int, report: TrainingReport) -> None:
    with workspace.transaction() as session:
        run = session.get_one(Run, run_id)
        finish_run(
            session,
            run,
            status="succeeded",
            counts={
                "labelled_images": report.labelled_images,
                "unreadable_images": len(report.unreadable_images),
                "missing_images": report.missing_images,
                **{f"{name}_images": size for name, size in report.split_sizes.items()},
            },
        )


def _train(
    workspace: Workspace,
    settings: TrainingSettings,
    on_epoch_end: Callable[[EpochReport], None] | None,
) -> TrainingReport:
    started = time.monotonic()
    get_backbone(settings.backbone)  # an unknown name fails now, not after decoding every image
    labelled_images, missing = _gather_labelled_images(workspace)
    if not labelled_images:
        raise TrainingDataError(
            "there are no labelled images in the store to train on; import labels first with "
            "`mlc labels import FILE.csv`"
            + (f" ({missing} labelled images no longer exist in the store)" if missing else "")
        )
    vocabulary, left_out = _choose_classes(labelled_images, settings.min_positives)
    if left_out:
        logger.warning("left out classes with too few positives: %s", left_out)

    decoded = decode_labeled_images(
        [image.key for image in labelled_images],
        workspace.store.get,
        settings.image_size,
        workers=workspace.settings.scoring.read_workers,
    )
    if decoded.failures:
        logger.warning("skipped %d unreadable labelled images", len(decoded.failures))
    if len(decoded.keys) < MIN_TRAINING_IMAGES:
        raise TrainingDataError(
            f"only {len(decoded.keys)} labelled images could be read "
            f"({len(decoded.failures)} unreadable); at least {MIN_TRAINING_IMAGES} are needed"
        )
    labelled = {image.key: image.positives for image in labelled_images}
    keys = list(decoded.keys)
    label_matrix = np.stack([vocabulary.to_multi_hot(labelled[key]) for key in keys])

    with workspace.transaction() as session:
        champion = get_champion(session)
        if champion is not None:
            session.expunge(champion)
    champion_test = _champion_test_keys(workspace, champion.version) if champion else []
    split = _split_keeping_champion_test(keys, label_matrix, set(champion_test), settings)

    # Same seed, same snapshot -> same initial weights, so versions are reproducible.
    fitted = fit_and_calibrate(
        decoded, label_matrix, split, vocabulary.classes, settings, on_epoch_end=on_epoch_end
    )
    model, predictor, outcome = fitted.model, fitted.predictor, fitted.outcome
    thresholds, metrics = fitted.thresholds, fitted.metrics

    comparison: dict[str, Any] | None = None
    champion_metrics: dict[str, Any] | None = None
    candidate_on_champion_split = metrics
    compared_with_champion = (
        _compare_with_champion(
            workspace,
            champion,
            predictor,
            vocabulary,
            thresholds,
            keys,
            decoded.images,
            labelled,
            champion_test,
        )
        if champion is not None and champion_test
        else None
    )
    if compared_with_champion is not None and champion is not None:
        candidate_on_champion_split, champion_metrics, compared = compared_with_champion
        comparison = {
            "champion_version": champion.version,
            "images": len(compared),
            "candidate": candidate_on_champion_split,
            "champion": champion_metrics,
        }
    elif champion is not None:
        champion_metrics = dict(champion.metrics)
    decision = decide_promotion(
        candidate_on_champion_split,
        champion_metrics,
        margin=settings.promotion_margin,
        max_class_ap_drop=settings.max_class_ap_drop,
    )

    model_bytes = serialize_model(model)
    artifact_sha256 = sha256_hex(model_bytes)
    snapshot = _data_snapshot(labelled_images)
    training_seconds = time.monotonic() - started
    with workspace.transaction() as session:
        version = next_version_name(session)
    paths = model_paths(version)
    card = ModelCard(
        version=version,
        classes=list(vocabulary.classes),
        thresholds=thresholds,
        image_size=settings.image_size,
        backbone=settings.backbone,
        weights=settings.weights,
        metrics=metrics,
        data_snapshot=snapshot,
        training_seconds=round(training_seconds, 1),
        library_versions=library_versions(),
        created_at=datetime.now(UTC).isoformat(),
        artifact_sha256=artifact_sha256,
        extra={
            "left_out_classes": left_out,
            "threshold_notes": list(fitted.threshold_notes),
            "epochs_run": outcome.epochs_run,
            "best_epoch": outcome.best_epoch,
            "champion_comparison": comparison,
            "decision": decision.reason,
            "settings": settings.model_dump(),
        },
    )
    store = workspace.store
    store.put(paths.model, model_bytes)
    store.put(paths.card, card.to_json())
    store.put(
        paths.split,
        json.dumps(
            {"train": split.train, "validation": split.validation, "test": split.test}
        ).encode(),
    )
    with workspace.transaction() as session:
        record = create_model_version(
            session,
            version=version,
            classes=list(vocabulary.classes),
            thresholds=thresholds,
            metrics=metrics,
            backbone=settings.backbone,
            image_size=settings.image_size,
            artifact_uri=store.uri(paths.model),
            artifact_sha256=artifact_sha256,
            card_uri=store.uri(paths.card),
        )
        if decision.promote:
            promote_model_version(session, record, decision.reason)
        else:
            set_decision(session, record, decision.reason)
        status = record.status
    logger.info("model %s: %s (%s)", version, status, decision.reason)
    return TrainingReport(
        version=version,
        status=status,
        decision=decision.reason,
        classes=list(vocabulary.classes),
        thresholds=thresholds,
        metrics=metrics,
        champion_comparison=comparison,
        left_out_classes=left_out,
        threshold_notes=list(fitted.threshold_notes),
        labelled_images=len(labelled_images),
        missing_images=missing,
        unreadable_images=dict(decoded.failures),
        split_sizes={
            "train": len(split.train),
            "validation": len(split.validation),
            "test": len(split.test),
        },
        epochs_run=outcome.epochs_run,
        best_epoch=outcome.best_epoch,
        training_seconds=round(training_seconds, 1),
        artifact_uri=store.uri(paths.model),
        data_snapshot=snapshot,
    )
