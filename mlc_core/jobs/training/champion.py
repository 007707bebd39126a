"""Judge a candidate against the champion on the champion's own test images.

Both models are measured on the same images, each decoded at its own input size as scoring
would decode them, so their metrics are comparable and the candidate never trained on any of
them (the split keeps the champion's test images in test).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlc_core.db.models import ModelVersion
from mlc_core.jobs.scoring.model_cache import cached_predictor
from mlc_core.jobs.training.data import LabelledImage, TrainingData, decode_from_store
from mlc_core.jobs.training.report import ChampionComparison
from mlc_core.jobs.workspace import Workspace
from mlc_core.labels import LabelVocabulary
from mlc_core.model.dataset import DecodedImages
from mlc_core.model.metrics import evaluate_predictions
from mlc_core.model.predict import PREDICT_BATCH_SIZE, Predictor
from mlc_core.model.recipe import FittedModel
from mlc_core.model.training import row_indices


def compare_with_champion(
    workspace: Workspace,
    champion: ModelVersion,
    champion_test: Sequence[str],
    candidate: FittedModel,
    data: TrainingData,
    candidate_decoded: DecodedImages,
) -> ChampionComparison | None:
    """Evaluate candidate and champion on the champion's test images that are still usable.

    ``candidate_decoded`` holds the test images at the size the candidate scores at.

    Returns:
        Both models' metrics and how many images they were judged on; None when none of the
        champion's test images is still labelled and readable.
    """
    labelled = data.by_key
    decodable = set(candidate_decoded.keys)
    evaluated = [key for key in champion_test if key in labelled and key in decodable]
    if not evaluated:
        return None
    candidate_images = candidate_decoded.images[row_indices(candidate_decoded.keys, evaluated)]
    champion_images = candidate_images
    if champion.image_size != candidate_images.shape[1]:
        redecoded = decode_from_store(workspace, evaluated, champion.image_size)
        # The same bytes decoded a moment ago; an image deleted meanwhile leaves both models'
        # comparison, so they are judged on the same images.
        if len(redecoded.keys) != len(evaluated):
            kept = set(redecoded.keys)
            candidate_images = candidate_images[[key in kept for key in evaluated]]
            evaluated = list(redecoded.keys)
        champion_images = redecoded.images
    champion_predictor = cached_predictor(workspace.store, champion, PREDICT_BATCH_SIZE)
    return ChampionComparison(
        champion_version=champion.version,
        images=len(evaluated),
        candidate=_metrics(
            data.vocabulary,
            candidate.thresholds,
            candidate.predictor,
            candidate_images,
            evaluated,
            labelled,
        ),
        champion=_metrics(
            LabelVocabulary(tuple(champion.classes)),
            [float(t) for t in champion.thresholds],
            champion_predictor,
            champion_images,
            evaluated,
            labelled,
        ),
    )


def _metrics(
    vocabulary: LabelVocabulary,
    thresholds: list[float],
    predictor: Predictor,
    images: np.ndarray,
    keys: list[str],
    labelled: dict[str, LabelledImage],
) -> dict[str, Any]:
    truth = np.stack([labelled[key].label_row(vocabulary) for key in keys])
    return evaluate_predictions(
        truth, predictor.predict(images), thresholds, list(vocabulary.classes)
    )
