"""Whether a scheduled run should retrain: the decision and its reason, in plain data.

The nightly run scores every night but retrains only when it is worth it. Retraining on the
labels the last training run already saw gives the same model again (training is seeded on the
data snapshot), so "new labels" are counted since the last successful training run, whether its
version was promoted or not: a candidate that lost stays lost until the labels change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from mlc_core.db.labels import count_labelled_images
from mlc_core.db.model_versions import get_champion
from mlc_core.db.runs import last_training_started_at
from mlc_core.jobs.labels_import import LabelImportReport
from mlc_core.jobs.scoring.reports import ScoreReport
from mlc_core.jobs.training.report import TrainingReport
from mlc_core.jobs.workspace import Workspace

RetrainPolicy = Literal["auto", "always", "never"]
RETRAIN_POLICIES: tuple[RetrainPolicy, ...] = ("auto", "always", "never")


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain now, and a sentence saying why (for logs and artifacts)."""

    retrain: bool
    reason: str
    champion_version: str | None
    labelled_images: int
    new_labelled_images: int
    last_training_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_training_at"] = (
            self.last_training_at.isoformat() if self.last_training_at else None
        )
        return data


def current_champion_version(workspace: Workspace) -> str | None:
    """The champion's version name, or ``None`` before the first promotion."""
    with workspace.transaction() as session:
        champion = get_champion(session)
        return champion.version if champion is not None else None


def decide_retrain(
    workspace: Workspace, policy: RetrainPolicy, *, min_new_labelled_images: int
) -> RetrainDecision:
    """Decide whether a run should retrain now.

    Args:
        workspace: the database to read labels, runs and the champion from.
        policy: ``always`` and ``never`` decide by themselves; ``auto`` retrains when there is
            no champion yet but there are labels, or when at least ``min_new_labelled_images``
            images got new or changed labels since the last successful training run started.
        min_new_labelled_images: the ``auto`` threshold (at least 1).

    Returns:
        The decision with its reason and the counts it was based on.

    Raises:
        ValueError: an unknown policy or a threshold below 1.
    """
    if policy not in RETRAIN_POLICIES:
        raise ValueError(
            f"unknown retrain policy {policy!r}; expected one of {', '.join(RETRAIN_POLICIES)}"
        )
    if min_new_labelled_images < 1:
        raise ValueError(
            f"min_new_labelled_images is {min_new_labelled_images}; expected at least 1"
        )
    with workspace.transaction() as session:
        champion = get_champion(session)
        champion_version = champion.version if champion is not None else None
        last_training = last_training_started_at(session)
        labelled = count_labelled_images(session)
        new = (
            labelled
            if last_training is None
            else count_labelled_images(session, changed_after=last_training)
        )
    retrain, reason = _rule(policy, champion_version, labelled, new, min_new_labelled_images)
    return RetrainDecision(retrain, reason, champion_version, labelled, new, last_training)


def _rule(
    policy: RetrainPolicy,
    champion_version: str | None,
    labelled: int,
    new: int,
    min_new_labelled_images: int,
) -> tuple[bool, str]:
    if policy == "never":
        return False, "retraining was switched off for this run (retrain=never)"
    if labelled == 0:
        return (
            False,
            "there are no labels to train on; import some with `mlc labels import` or put a "
            "labels manifest in the store (MLC_LABELS_KEY)",
        )
    if policy == "always":
        return True, "retraining was asked for (retrain=always)"
    if champion_version is None:
        return True, f"there is no champion yet and {labelled} images are labelled"
    if new >= min_new_labelled_images:
        return (
            True,
            f"{new} images got new or changed labels since the last training run "
            f"(threshold {min_new_labelled_images})",
        )
    return (
        False,
        f"only {new} images got new or changed labels since the last training run; "
        f"retraining waits for {min_new_labelled_images} (MLC_ORCHESTRATION__"
        "RETRAIN_MIN_NEW_LABELLED_IMAGES) or the weekly retrain",
    )


@dataclass
class RetrainOutcome:
    """What a retrain did: the labels it imported first (if any), the training, and the
    rescore after a promotion (if any)."""

    labels: LabelImportReport | None
    training: TrainingReport
    rescore: ScoreReport | None


@dataclass
class NightlyOutcome:
    """What a nightly run did: its scoring (or why it skipped it), its retrain decision, and
    the retrain when it made one."""

    scoring: ScoreReport | None
    decision: RetrainDecision
    retrain: RetrainOutcome | None
    skipped_scoring: str | None = None
