"""Flow: the nightly run. Score new images, then retrain when enough new labels arrived.

The weekly retrain has a deployment (and schedule) of its own; the nightly run retrains between
two weekly ones only when it is worth it: when there is no champion yet, or when at least
MLC_ORCHESTRATION__RETRAIN_MIN_NEW_LABELLED_IMAGES images got new or changed labels since the
last training run (see ``mlc_core.jobs.schedule``). A fresh installation thus trains its first
model on the first night it has labels, and scores its images right after.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows.artifacts import publish_nightly_report
from flows.common import opened_workspace
from flows.execution import TRANSIENT_RETRY_DELAYS, retry_transient_errors
from flows.labels import import_labels_flow
from flows.retrain import retrain_flow
from flows.score import score_flow
from mlc_core.jobs.schedule import (
    NightlyOutcome,
    RetrainDecision,
    RetrainOutcome,
    RetrainPolicy,
    current_champion_version,
    decide_retrain,
)
from mlc_core.jobs.scoring.reports import ScoreReport
from mlc_core.settings import load_settings


@task(
    name="mlc-champion",
    retries=len(TRANSIENT_RETRY_DELAYS),
    retry_delay_seconds=TRANSIENT_RETRY_DELAYS,
    retry_condition_fn=retry_transient_errors,
)
def champion_version() -> str | None:
    """The champion's version, or ``None`` before the first promotion."""
    with opened_workspace() as workspace:
        return current_champion_version(workspace)


@task(
    name="mlc-decide-retrain",
    retries=len(TRANSIENT_RETRY_DELAYS),
    retry_delay_seconds=TRANSIENT_RETRY_DELAYS,
    retry_condition_fn=retry_transient_errors,
)
def decide(policy: RetrainPolicy, min_new_labelled_images: int) -> RetrainDecision:
    """Whether to retrain now, with the reason and the counts behind it."""
    with opened_workspace() as workspace:
        return decide_retrain(workspace, policy, min_new_labelled_images=min_new_labelled_images)


@flow(name="mlc-nightly")
def nightly_flow(
    prefixes: list[str] | None = None,
    retrain: RetrainPolicy = "auto",
    min_new_labelled_images: int | None = None,
) -> NightlyOutcome:
    """Score new images with the champion, then retrain if its rule says so.

    Args:
        prefixes: store prefixes to score; empty: MLC_IMAGES_PREFIX.
        retrain: auto retrains when there is no champion yet or enough images got new labels
            since the last training run; always and never decide by themselves.
        min_new_labelled_images: the auto threshold for this run; empty:
            MLC_ORCHESTRATION__RETRAIN_MIN_NEW_LABELLED_IMAGES.
    """
    logger = get_run_logger()
    settings = load_settings()
    threshold = (
        settings.orchestration.retrain_min_new_labelled_images
        if min_new_labelled_images is None
        else min_new_labelled_images
    )
    scoring: ScoreReport | None = None
    skipped_scoring: str | None = None
    if champion_version() is None:
        skipped_scoring = "there is no champion model yet to score with"
        logger.warning("not scoring: %s", skipped_scoring)
    else:
        scoring = score_flow(prefixes=prefixes, mode="new")
    # Imported before deciding, so labels that arrived today count.
    labels_imported = retrain != "never" and _import_manifest(settings.labels_key)
    decision = decide(retrain, threshold)
    logger.info("%s: %s", "retraining" if decision.retrain else "not retraining", decision.reason)
    retrained: RetrainOutcome | None = None
    if decision.retrain:
        retrained = retrain_flow(import_labels=not labels_imported)
        if scoring is None and retrained.training.status == "champion":
            skipped_scoring = None
            scoring = score_flow(prefixes=prefixes, mode="new")
    outcome = NightlyOutcome(scoring, decision, retrained, skipped_scoring=skipped_scoring)
    publish_nightly_report(outcome)
    return outcome


def _import_manifest(labels_key: str) -> bool:
    """Import the labels manifest if the store has one; returns whether it did."""
    with opened_workspace() as workspace:
        present = workspace.store.exists(labels_key)
    if present:
        import_labels_flow(store_key=labels_key)
    return present
