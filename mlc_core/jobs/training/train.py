"""Train a model version from the stored labels, measure it, and promote it only if it earns it.

The steps, and why they are in this order:
1. Gather and decode the labelled images that still exist in the store
   (:mod:`mlc_core.jobs.training.data`).
2. Split deterministically. Images in the champion's test split stay in test, so the candidate
   never trains on the images it is judged on, and both are compared on the same images.
3. Train, calibrate per-class thresholds on validation, evaluate on test (both decoded at the
   side the model scores at, which may be larger than the training side: scoring_scale).
4. Compare with the champion on its test images (:mod:`mlc_core.jobs.training.champion`) and
   decide on the promotion.
5. Write the model file, its card and its split to the store, then register the version and
   the promotion decision in one transaction. Nothing reaches the database before the files
   exist, and a failure before step 5 writes nothing at all.

One training runs at a time, however it was started: it holds the training lock.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from mlc_core.db.model_versions import (
    create_model_version,
    get_champion,
    next_version_name,
    promote_model_version,
    set_decision,
)
from mlc_core.db.models import ModelVersion, Run
from mlc_core.db.runs import finish_run, start_run
from mlc_core.errors import describe_error
from mlc_core.jobs.locks import TRAINING_LOCK, holding_locks
from mlc_core.jobs.scoring.model_cache import cached_predictor
from mlc_core.jobs.store_paths import new_model_paths
from mlc_core.jobs.training.champion import compare_with_champion
from mlc_core.jobs.training.data import (
    TrainingData,
    champion_test_keys,
    decode_for_scoring,
    load_training_data,
    load_unlabelled_images,
    split_keeping_champion_test,
)
from mlc_core.jobs.training.report import ChampionComparison, TrainingReport
from mlc_core.jobs.workspace import Workspace
from mlc_core.model.artifacts import ModelCard, library_versions, serialize_model, sha256_hex
from mlc_core.model.backbones import get_backbone
from mlc_core.model.build import at_size, weights_fit_both_sizes
from mlc_core.model.noisy_student import Teacher
from mlc_core.model.predict import PREDICT_BATCH_SIZE, Predictor
from mlc_core.model.promotion import PromotionDecision, decide_promotion
from mlc_core.model.recipe import FittedModel, fit_and_calibrate
from mlc_core.model.split import DataSplit
from mlc_core.model.training import EpochReport
from mlc_core.settings import TrainingSettings

logger = logging.getLogger(__name__)


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
        UnknownBackbone: the backbone is not in the registry; nothing is written.
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
        with workspace.transaction() as session:
            finish_run(
                session,
                session.get_one(Run, run_id),
                status="succeeded",
                counts={
                    "labelled_images": report.labelled_images,
                    "unreadable_images": len(report.unreadable_images),
                    "missing_images": report.missing_images,
                    **{f"{name}_images": size for name, size in report.split_sizes.items()},
                },
            )
    return report


def _train(
    workspace: Workspace,
    settings: TrainingSettings,
    on_epoch_end: Callable[[EpochReport], None] | None,
) -> TrainingReport:
    started = time.monotonic()
    budget_started = time.perf_counter()
    get_backbone(settings.backbone)  # an unknown name fails now, not after decoding every image
    data = load_training_data(workspace, settings)
    with workspace.transaction() as session:
        champion = get_champion(session)
        if champion is not None:
            session.expunge(champion)
    champion_test = champion_test_keys(workspace, champion) if champion else []
    split = split_keeping_champion_test(data, set(champion_test), settings)
    scoring_images, split = decode_for_scoring(workspace, data, split, settings)
    unlabelled = None
    if settings.semi_supervised:
        excluded = {image.key for image in data.images} | set(split.test)
        unlabelled = load_unlabelled_images(workspace, settings, excluded).images
    teacher = _champion_teacher(workspace, champion, settings) if unlabelled is not None else None
    # Same seed, same snapshot -> same initial weights, so versions are reproducible.
    fitted = fit_and_calibrate(
        data.decoded,
        data.label_matrix,
        split,
        data.vocabulary.classes,
        settings,
        on_epoch_end=on_epoch_end,
        started=budget_started,
        unlabelled=unlabelled,
        teacher=teacher,
        scoring=scoring_images,
    )
    comparison = (
        compare_with_champion(
            workspace,
            champion,
            champion_test,
            fitted,
            data,
            data.decoded if scoring_images is None else scoring_images,
        )
        if champion is not None and champion_test
        else None
    )
    decision = _decide(fitted, champion, comparison, settings)
    training_seconds = round(time.monotonic() - started, 1)
    card = _model_card(settings, data, fitted, comparison, decision, training_seconds)
    registered = _register(workspace, card, fitted, split, decision)
    logger.info("model %s: %s (%s)", registered[0], registered[1], decision.reason)
    return _report(data, fitted, split, comparison, decision, training_seconds, registered)


def _report(
    data: TrainingData,
    fitted: FittedModel,
    split: DataSplit,
    comparison: ChampionComparison | None,
    decision: PromotionDecision,
    training_seconds: float,
    registered: tuple[str, str, str],
) -> TrainingReport:
    version, status, artifact_uri = registered
    return TrainingReport(
        version=version,
        status=status,
        decision=decision.reason,
        classes=list(data.vocabulary.classes),
        thresholds=fitted.thresholds,
        metrics=fitted.metrics,
        champion_comparison=comparison,
        left_out_classes=data.left_out_classes,
        threshold_notes=list(fitted.threshold_notes),
        labelled_images=len(data.images),
        missing_images=data.missing,
        unreadable_images=dict(data.decoded.failures),
        split_sizes={
            "train": len(split.train),
            "validation": len(split.validation),
            "test": len(split.test),
        },
        epochs_run=fitted.outcome.epochs_run,
        best_epoch=fitted.outcome.best_epoch,
        training_seconds=training_seconds,
        artifact_uri=artifact_uri,
        data_snapshot=data.snapshot,
        planned_epochs=fitted.outcome.planned_epochs,
        budget_seconds=fitted.outcome.budget_seconds,
        stopped_at_budget=fitted.outcome.stopped_at_budget,
        semi_supervised=fitted.semi_supervised,
    )


def _champion_teacher(
    workspace: Workspace, champion: ModelVersion | None, settings: TrainingSettings
) -> Teacher | None:
    """The champion as the pseudo-labelling teacher, when the settings ask for it and it can."""
    if settings.semi_supervised_teacher != "champion":
        return None
    refusal = None
    if champion is None:
        refusal = "no champion yet"
    elif not weights_fit_both_sizes(
        champion.backbone, len(champion.classes), (champion.image_size, settings.image_size)
    ):
        refusal = f"the champion works at {champion.image_size} px, not {settings.image_size}"
    if refusal is not None or champion is None:
        logger.info("semi-supervised: %s; a first model trained on the labels teaches", refusal)
        return None
    predictor = cached_predictor(workspace.store, champion, PREDICT_BATCH_SIZE)
    if champion.image_size != settings.image_size:
        # A champion at another side (one that scores larger than it trained at, by
        # scoring_scale) teaches with its weights at the side the unlabelled images have.
        model = at_size(predictor.model, champion.backbone, settings.image_size, dropout_rate=0.0)
        predictor = Predictor(model, PREDICT_BATCH_SIZE)
    return Teacher(f"champion {champion.version}", list(champion.classes), predictor.predict)


def _decide(
    fitted: FittedModel,
    champion: ModelVersion | None,
    comparison: ChampionComparison | None,
    settings: TrainingSettings,
) -> PromotionDecision:
    """Judge on the champion's test images when there are any, else on each one's own."""
    candidate_metrics = comparison.candidate if comparison is not None else fitted.metrics
    champion_metrics: dict[str, Any] | None = None
    if comparison is not None:
        champion_metrics = comparison.champion
    elif champion is not None:
        champion_metrics = dict(champion.metrics)
    return decide_promotion(
        candidate_metrics,
        champion_metrics,
        margin=settings.promotion_margin,
        max_class_ap_drop=settings.max_class_ap_drop,
    )


def _model_card(
    settings: TrainingSettings,
    data: TrainingData,
    fitted: FittedModel,
    comparison: ChampionComparison | None,
    decision: PromotionDecision,
    training_seconds: float,
) -> ModelCard:
    """The card of the new version; its name and checksum are filled in when it is written."""
    return ModelCard(
        version="",
        classes=list(data.vocabulary.classes),
        thresholds=fitted.thresholds,
        image_size=settings.scoring_image_size,
        backbone=settings.backbone,
        weights=settings.weights,
        metrics=fitted.metrics,
        data_snapshot=data.snapshot,
        training_seconds=training_seconds,
        library_versions=library_versions(),
        created_at=datetime.now(UTC).isoformat(),
        artifact_sha256="",
        extra={
            "left_out_classes": data.left_out_classes,
            "threshold_notes": list(fitted.threshold_notes),
            "epochs_run": fitted.outcome.epochs_run,
            "best_epoch": fitted.outcome.best_epoch,
            "planned_epochs": fitted.outcome.planned_epochs,
            "time_budget_seconds": fitted.outcome.budget_seconds,
            "stopped_at_budget": fitted.outcome.stopped_at_budget,
            "semi_supervised": fitted.semi_supervised,
            "trained_at_image_size": settings.image_size,
            "champion_comparison": asdict(comparison) if comparison is not None else None,
            "decision": decision.reason,
            "settings": settings.model_dump(),
        },
    )


def _register(
    workspace: Workspace,
    card: ModelCard,
    fitted: FittedModel,
    split: DataSplit,
    decision: PromotionDecision,
) -> tuple[str, str, str]:
    """Write the model's files, then register the version and its decision.

    Returns:
        The version's name, its status and the URI of its model file.
    """
    model_bytes = serialize_model(fitted.model)
    card.artifact_sha256 = sha256_hex(model_bytes)
    with workspace.transaction() as session:
        card.version = next_version_name(session)
    paths = new_model_paths(card.version)
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
            version=card.version,
            classes=card.classes,
            thresholds=card.thresholds,
            metrics=card.metrics,
            backbone=card.backbone,
            image_size=card.image_size,
            artifact_uri=store.uri(paths.model),
            artifact_sha256=card.artifact_sha256,
            card_uri=store.uri(paths.card),
        )
        if decision.promote:
            promote_model_version(session, record, decision.reason)
        else:
            set_decision(session, record, decision.reason)
        status = record.status
    return card.version, status, store.uri(paths.model)
