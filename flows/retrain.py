"""Flow: import the labels manifest, train, gate and promote; rescore after a promotion.

It composes the existing flows as subflows, so each step has its own run, logs and state in
the Prefect UI: ``mlc-import-labels`` (when the manifest exists in the store), ``mlc-train``
(which evaluates the candidate on the champion's test images and promotes it only if it is
better) and, after a promotion, ``mlc-score`` in ``stale`` mode so every image gets the new
champion's tags.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.artifacts import publish_retrain_report
from flows.common import opened_workspace
from flows.labels import import_labels_flow
from flows.parameters import TrainingOverrides
from flows.score import score_flow
from flows.train import train_flow
from mlc_core.jobs.labels_import import LabelImportReport
from mlc_core.jobs.schedule import RetrainOutcome
from mlc_core.jobs.scoring.reports import ScoreReport
from mlc_core.settings import load_settings


@flow(name="mlc-retrain")
def retrain_flow(
    import_labels: bool = True,
    training: TrainingOverrides | None = None,
    rescore_after_promotion: bool | None = None,
) -> RetrainOutcome:
    """Retrain the model from the stored labels and promote it if it beats the champion.

    Args:
        import_labels: first import the labels manifest at MLC_LABELS_KEY in the store, if it
            exists (importing an unchanged manifest again changes nothing).
        training: overrides of the MLC_TRAINING__ settings for this run; empty fields keep them.
        rescore_after_promotion: when the new version becomes champion, rescore the images
            scored by older models (mode stale); empty: MLC_ORCHESTRATION__RESCORE_AFTER_PROMOTION.
    """
    logger = get_run_logger()
    settings = load_settings()
    if rescore_after_promotion is None:
        rescore_after_promotion = settings.orchestration.rescore_after_promotion
    labels = _import_manifest(settings.labels_key) if import_labels else None
    # The training holds the training lock itself, however it was started.
    report = train_flow(**(training or TrainingOverrides()).train_flow_parameters())
    publish_retrain_report(report, labels=labels)
    rescore: ScoreReport | None = None
    if report.status == "champion" and rescore_after_promotion:
        logger.info(
            "%s is the new champion; rescoring images scored by older models", report.version
        )
        rescore = score_flow(mode="stale")
    return RetrainOutcome(labels=labels, training=report, rescore=rescore)


def _import_manifest(labels_key: str) -> LabelImportReport | None:
    with opened_workspace() as workspace:
        present = workspace.store.exists(labels_key)
    if present:
        return import_labels_flow(store_key=labels_key)
    get_run_logger().info(
        "no labels manifest at %s in the store; training on the labels already imported",
        labels_key,
    )
    return None
