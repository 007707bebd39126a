"""What a training run learns from: the labelled images that still exist, decoded once.

The labelled images are gathered with their etags, so a version records exactly which data
made it (a hash of (key, etag, tags)); the classes are the tags with enough positives; every
image is decoded once through ``mlc_core.images`` with the scorer's settings (the same code
and the same pixel limit scoring uses), unreadable ones skipped and counted. The split keeps
the champion's test images in test, so a candidate never trains on the images it is judged on.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import heapq
import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlc_core.db.labels import complete_label_uris, labels_by_image
from mlc_core.db.models import ModelVersion
from mlc_core.errors import ObjectNotFound, TrainingDataError
from mlc_core.images import decode_image, has_image_extension
from mlc_core.jobs.store_paths import model_paths_of
from mlc_core.jobs.workspace import Workspace
from mlc_core.labels import LabelVocabulary
from mlc_core.model.dataset import DecodedImages, decode_labeled_images
from mlc_core.model.split import DataSplit, split_dataset
from mlc_core.settings import TrainingSettings
from mlc_core.storage import key_for_uri

logger = logging.getLogger(__name__)

# Below this many decodable labelled images a split leaves too little to learn or measure.
MIN_TRAINING_IMAGES = 12


@dataclass(frozen=True)
class LabelledImage:
    """A labelled image as the store lists it now, with what its labels state.

    Attributes:
        complete: a person stated the image's whole tag set, so every class it does not
            carry is absent (closed world). Otherwise only ``positives`` and ``negatives`` are
            known (a correction ``+sea -trees``) and every other class is unknown.
    """

    key: str
    etag: str
    positives: frozenset[str]
    negatives: frozenset[str] = frozenset()
    complete: bool = True

    def label_row(self, vocabulary: LabelVocabulary) -> np.ndarray:
        """float32 per class of ``vocabulary``: 1 positive, 0 negative, NaN unknown."""
        row = vocabulary.to_multi_hot(self.positives).astype(np.float32)
        if self.complete:
            return row
        stated = self.positives | self.negatives
        unknown = [index for index, tag in enumerate(vocabulary.classes) if tag not in stated]
        row[unknown] = np.nan
        return row


@dataclass
class TrainingData:
    """The decoded labelled images, their label matrix and what was left out.

    Attributes:
        images: every labelled image that exists in the store, by key.
        missing: labelled images that no longer exist in the store.
        vocabulary: the classes, in label-matrix column order.
        left_out_classes: tags with too few positives, with their counts.
        decoded: the images that decoded, at the training image size.
        label_matrix: float32 1/0/NaN (unknown), row ``i`` for ``decoded.keys[i]``.
        snapshot: count and hash of (key, etag, tags) of the labelled images.
    """

    images: list[LabelledImage]
    missing: int
    vocabulary: LabelVocabulary
    left_out_classes: dict[str, int]
    decoded: DecodedImages
    label_matrix: np.ndarray
    snapshot: dict[str, Any]

    @property
    def by_key(self) -> dict[str, LabelledImage]:
        return {image.key: image for image in self.images}


def load_training_data(workspace: Workspace, settings: TrainingSettings) -> TrainingData:
    """Gather, choose classes for and decode the labelled images.

    Raises:
        TrainingDataError: no labelled images, fewer than two classes with enough positives,
            or fewer than ``MIN_TRAINING_IMAGES`` images that decode.
    """
    images, missing = _gather_labelled_images(workspace)
    if not images:
        raise TrainingDataError(
            "there are no labelled images in the store to train on; import labels first with "
            "`mlc labels import FILE.csv`"
            + (f" ({missing} labelled images no longer exist in the store)" if missing else "")
        )
    vocabulary, left_out = _choose_classes(images, settings.min_positives)
    if left_out:
        logger.warning("left out classes with too few positives: %s", left_out)
    decoded = decode_from_store(workspace, [image.key for image in images], settings.image_size)
    if decoded.failures:
        logger.warning("skipped %d unreadable labelled images", len(decoded.failures))
    if len(decoded.keys) < MIN_TRAINING_IMAGES:
        raise TrainingDataError(
            f"only {len(decoded.keys)} labelled images could be read "
            f"({len(decoded.failures)} unreadable); at least {MIN_TRAINING_IMAGES} are needed"
        )
    by_key = {image.key: image for image in images}
    matrix = np.stack([by_key[key].label_row(vocabulary) for key in decoded.keys])
    return TrainingData(
        images, missing, vocabulary, left_out, decoded, matrix, _data_snapshot(images)
    )


def load_unlabelled_images(
    workspace: Workspace, settings: TrainingSettings, excluded: set[str]
) -> DecodedImages:
    """Decode the images under the images prefix that carry no label, for semi-supervision.

    Args:
        excluded: keys never to use: every labelled image and every test image, so the test
            set stays a fair measure.

    Returns:
        At most ``settings.semi_supervised_max_images`` of them, chosen by a hash of the key
        (the same images for the same store, whatever the listing order); unreadable ones
        are left out.
    """
    chosen: list[tuple[bytes, str]] = []
    limit = settings.semi_supervised_max_images
    for info in workspace.store.iter_objects(workspace.settings.images_prefix):
        if info.key in excluded or not has_image_extension(info.key):
            continue
        rank = hashlib.sha256(f"{settings.seed}:{info.key}".encode()).digest()
        # A bounded max-heap on the negated rank keeps the `limit` smallest ranks.
        entry = (bytes(255 - b for b in rank), info.key)
        if len(chosen) < limit:
            heapq.heappush(chosen, entry)
        elif entry > chosen[0]:
            heapq.heapreplace(chosen, entry)
    keys = sorted(key for _, key in chosen)
    decoded = decode_from_store(workspace, keys, settings.image_size)
    if decoded.failures:
        logger.warning("skipped %d unreadable unlabelled images", len(decoded.failures))
    return decoded


def decode_from_store(workspace: Workspace, keys: list[str], size: int) -> DecodedImages:
    """Read ``keys`` from the store and decode them at ``size`` with the scorer's limits, in
    the scorer's number of reader threads; unreadable ones are in ``failures``."""
    return decode_labeled_images(
        keys,
        workspace.store.get,
        size,
        workers=workspace.settings.scoring.read_workers,
        decode=image_decoder(workspace),
    )


def image_decoder(workspace: Workspace) -> functools.partial[np.ndarray]:
    """``decode(data, size)`` with the scorer's limits, so training refuses what scoring does."""
    return functools.partial(decode_image, max_pixels=workspace.settings.scoring.max_image_pixels)


def _gather_labelled_images(workspace: Workspace) -> tuple[list[LabelledImage], int]:
    with workspace.transaction() as session:
        labels = labels_by_image(session)
        complete = complete_label_uris(session)
    wanted: dict[str, LabelledImage] = {}
    for uri, tags in labels.items():
        key = key_for_uri(workspace.store, uri)
        if key is not None:
            wanted[key] = LabelledImage(
                key,
                "",
                positives=frozenset(tag for tag, positive in tags.items() if positive),
                negatives=frozenset(tag for tag, positive in tags.items() if not positive),
                complete=uri in complete,
            )
    found: list[LabelledImage] = []
    for prefix in _listing_prefixes(wanted):
        for info in workspace.store.iter_objects(prefix):
            labelled = wanted.pop(info.key, None)
            if labelled is not None:
                found.append(dataclasses.replace(labelled, etag=info.etag))
    found.sort(key=lambda image: image.key)
    return found, len(wanted)


def _listing_prefixes(keys: Iterable[str]) -> list[str]:
    # Listing each top-level folder that holds labelled images streams far fewer objects than
    # the whole store, and a request per image would be slower still.
    return sorted({key.split("/", 1)[0] + "/" if "/" in key else key for key in keys})


def _data_snapshot(images: list[LabelledImage]) -> dict[str, Any]:
    digest = hashlib.sha256()
    for image in images:
        stated = [image.key, image.etag, sorted(image.positives)]
        if not image.complete:
            stated += [sorted(image.negatives), "partial"]
        digest.update(json.dumps(stated).encode())
    return {"count": len(images), "sha256": digest.hexdigest()}


def _choose_classes(
    images: list[LabelledImage], min_positives: int
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


def champion_test_keys(workspace: Workspace, champion: ModelVersion) -> list[str]:
    """The keys the champion was tested on (empty when it kept no split)."""
    card_key = key_for_uri(workspace.store, champion.card_uri) or ""
    try:
        split = json.loads(workspace.store.get(model_paths_of(card_key).split))
    except ObjectNotFound:
        logger.warning(
            "champion %s has no stored split; comparing on the new test split", champion.version
        )
        return []
    return list(split.get("test", []))


def split_keeping_champion_test(
    data: TrainingData, champion_test: set[str], settings: TrainingSettings
) -> DataSplit:
    """A stratified split of the decoded images, the champion's test images all in test."""
    keys = data.decoded.keys
    fresh = [i for i, key in enumerate(keys) if key not in champion_test]
    split = split_dataset(
        [keys[i] for i in fresh],
        data.label_matrix[fresh],
        validation_fraction=settings.validation_fraction,
        test_fraction=settings.test_fraction,
        seed=settings.seed,
    )
    kept_test = [key for key in keys if key in champion_test]
    return DataSplit(split.train, split.validation, sorted(split.test + kept_test))


def decode_for_scoring(
    workspace: Workspace, data: TrainingData, split: DataSplit, settings: TrainingSettings
) -> tuple[DecodedImages | None, DataSplit]:
    """The validation and test images decoded at the size the model will score at.

    Returns:
        ``(None, split)`` when the model scores at the size it trains at; else the images
        and the split without any validation or test image that no longer decodes (deleted
        since it was read a moment ago), so every image it names can be judged at both sizes.
    """
    if settings.scoring_image_size == settings.image_size:
        return None, split
    keys = sorted(split.validation + split.test)
    decoded = decode_from_store(workspace, keys, settings.scoring_image_size)
    if len(decoded.keys) == len(keys):
        return decoded, split
    kept = set(decoded.keys)
    logger.warning(
        "%d validation and test images no longer decode at %d px; left out of both",
        len(keys) - len(kept),
        settings.scoring_image_size,
    )
    return decoded, DataSplit(
        split.train,
        [key for key in split.validation if key in kept],
        [key for key in split.test if key in kept],
    )
