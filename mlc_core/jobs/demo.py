"""The demo: a synthetic data set in the store, labels for most of it, and a check on the rest.

The demo is the main job on the embedded defaults. It writes its images under
``<images prefix>demo/``, imports labels for about four in five of them, and keeps the truth of
the others (the hold-out) aside, so after training and scoring it can say how well the champion
tags images it has never seen. Running it again reuses what the first run wrote: images are only
written when missing, so their etags stay the same and scoring has nothing new to do.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlc_core.db.model_versions import require_champion
from mlc_core.db.scores import scores_for_uris
from mlc_core.jobs.demo_data import make_synthetic_images
from mlc_core.jobs.labels_import import LabelImportReport
from mlc_core.jobs.scoring.reports import ScoreReport
from mlc_core.jobs.training.report import TrainingReport
from mlc_core.jobs.workspace import Workspace
from mlc_core.labels import LabelVocabulary
from mlc_core.model.metrics import evaluate_predictions

DEMO_FOLDER = "demo/"
# 600 images at 96 px: about 480 labelled ones train to a hold-out mAP above 0.9 in the two
# minutes of training the demo's three-minute budget leaves on two cores.
DEMO_IMAGES = 600
DEMO_LABELS_KEY = "labels/demo-labels.csv"


@dataclass
class DemoData:
    """Where the demo put its images, and the truth it kept back."""

    prefix: str
    labels_csv: bytes
    labelled: int
    holdout_truth: dict[str, list[str]]
    written: int


@dataclass(frozen=True)
class DemoExample:
    """One hold-out image: its truth beside what the champion said."""

    key: str
    true_tags: list[str]
    tags: dict[str, float]
    probabilities: dict[str, float]


@dataclass
class DemoEvaluation:
    """How the champion did on the hold-out images it never saw a label of."""

    model_version: str
    images: int
    metrics: dict[str, Any]
    examples: list[DemoExample] = field(default_factory=list)


@dataclass
class DemoOutcome:
    """What the demo did, step by step."""

    prefix: str
    labels: LabelImportReport
    training: TrainingReport
    scoring: ScoreReport
    holdout: DemoEvaluation


def prepare_demo_data(
    workspace: Workspace, *, images: int = DEMO_IMAGES, holdout_fraction: float = 0.2, seed: int = 7
) -> DemoData:
    """Write the synthetic images (those not there yet) and the labels file to the store."""
    store = workspace.store
    prefix = workspace.settings.images_prefix + DEMO_FOLDER
    synthetic = make_synthetic_images(images, seed=seed)
    holdout_every = max(2, round(1 / holdout_fraction))
    existing = {info.key for info in store.iter_objects(prefix)}
    written = 0
    labels = io.StringIO()
    writer = csv.writer(labels, lineterminator="\n")
    writer.writerow(["key", "tags"])
    holdout: dict[str, list[str]] = {}
    for index, image in enumerate(synthetic):
        key = prefix + image.name
        if key not in existing:
            store.put(key, image.jpeg)
            written += 1
        if index % holdout_every == 0:
            holdout[key] = list(image.tags)
        else:
            writer.writerow([key, "|".join(image.tags)])
    labels_csv = labels.getvalue().encode()
    store.put(DEMO_LABELS_KEY, labels_csv)
    return DemoData(
        prefix=prefix,
        labels_csv=labels_csv,
        labelled=len(synthetic) - len(holdout),
        holdout_truth=holdout,
        written=written,
    )


def evaluate_holdout(
    workspace: Workspace, holdout_truth: dict[str, list[str]], *, examples: int = 4
) -> DemoEvaluation:
    """Per-class average precision of the champion's stored scores on the hold-out images."""
    store = workspace.store
    with workspace.transaction() as session:
        champion = require_champion(session)
        stored = scores_for_uris(session, champion.id, [store.uri(key) for key in holdout_truth])
        vocabulary = LabelVocabulary(tuple(champion.classes))
        thresholds = list(champion.thresholds)
        version = champion.version
    keys = [key for key in sorted(holdout_truth) if store.uri(key) in stored]
    y_true = np.stack([vocabulary.to_multi_hot(holdout_truth[key]) for key in keys])
    y_prob = np.array([stored[store.uri(key)].probabilities for key in keys], dtype=np.float32)
    metrics = evaluate_predictions(y_true, y_prob, thresholds, list(vocabulary.classes))
    shown = [
        DemoExample(
            key=key,
            true_tags=sorted(holdout_truth[key]),
            tags=dict(stored[store.uri(key)].tags),
            probabilities=dict(
                zip(vocabulary.classes, stored[store.uri(key)].probabilities, strict=True)
            ),
        )
        for key in keys[:examples]
    ]
    return DemoEvaluation(model_version=version, images=len(keys), metrics=metrics, examples=shown)
