"""Deterministic multilabel-stratified train / validation / test split.

The split is keyed on the image: which part an image lands in depends only on the set of
``(key, label row)`` pairs and the seed, never on the order the images were listed in. Images
are visited in the order of ``sha256(seed:key)``, which plays the role of the random shuffle,
and every tie the algorithm meets is broken by that same hash, so re-listing a bucket in a
different order (or on a different machine) reproduces the split exactly.

The assignment is iterative stratification (Sechidis, Tsoumakas & Vlahavas, "On the
stratification of multi-label data", ECML PKDD 2011): the rarest remaining label is handled
first, and each of its images goes to the part that still wants the most images of that label.
Two small additions keep tiny data sets usable: no part is left without images, and a class
with at least as many positives as there are parts gets a positive in every part, so it can be
both calibrated on validation and measured on test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_IMAGES = 3
# Desired counts are fractional; values closer than this are treated as a tie.
_TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class DataSplit:
    """Image keys of each part, each list sorted."""

    train: list[str]
    validation: list[str]
    test: list[str]


def split_dataset(
    keys: Sequence[str],
    label_matrix: np.ndarray,
    *,
    validation_fraction: float,
    test_fraction: float,
    seed: int,
) -> DataSplit:
    """Split images into train, validation and test, stratified on every label.

    Every class's positives are spread across the three parts in proportion to the fractions
    (as closely as whole images allow), images without any positive label are spread by the
    same proportions, and no part is empty.

    Args:
        keys: one unique key per image.
        label_matrix: multi-hot matrix of shape ``(len(keys), num_classes)`` holding 0 and 1,
            or NaN where a class is unknown for an image (stratified as not positive).
        validation_fraction: share of images for validation, greater than 0.
        test_fraction: share of images for test, greater than 0; the two sum to less than 1.
        seed: changes the split; the same seed and images always give the same split.

    Returns:
        The three disjoint parts, which together hold every key exactly once.

    Raises:
        ValueError: the keys and the matrix do not match, a key is repeated, the matrix is
            not 0/1, the fractions are out of range, or there are fewer than 3 images.
    """
    positives = _validated_positives(keys, label_matrix)
    fractions = _validated_fractions(validation_fraction, test_fraction)
    digests = [hashlib.sha256(f"{seed}:{key}".encode()).digest() for key in keys]
    hash_order = sorted(range(len(keys)), key=lambda i: (digests[i], keys[i]))
    tie_breakers = [int.from_bytes(digest[:8], "big") for digest in digests]

    assigner = _IterativeStratifier(positives, fractions, tie_breakers)
    ordered = np.array(hash_order, dtype=np.int64)
    while (label := assigner.rarest_remaining_label()) is not None:
        for image in ordered[positives[ordered, label] == 1]:
            if assigner.is_unassigned(int(image)):
                assigner.assign(int(image), label)
    for image in hash_order:
        if assigner.is_unassigned(image):
            assigner.assign(image, None)

    parts: list[list[str]] = [[], [], []]
    for image, part in enumerate(assigner.part_of):
        parts[part].append(keys[image])
    train, validation, test = (sorted(part) for part in parts)
    return DataSplit(train=train, validation=validation, test=test)


class _IterativeStratifier:
    """Bookkeeping of the iterative stratification: what each part still wants."""

    def __init__(
        self, positives: np.ndarray, fractions: np.ndarray, tie_breakers: list[int]
    ) -> None:
        num_images = positives.shape[0]
        self.positives = positives
        self.tie_breakers = tie_breakers
        self.part_of = np.full(num_images, -1, dtype=np.int64)
        self.unassigned_count = num_images
        self.remaining_per_label = positives.sum(axis=0).astype(np.int64)
        self.wanted_total = fractions * num_images
        self.wanted_per_label = np.outer(fractions, self.remaining_per_label.astype(np.float64))
        self.assigned_total = np.zeros(len(fractions), dtype=np.int64)
        self.assigned_per_label = np.zeros(self.wanted_per_label.shape, dtype=np.int64)

    def rarest_remaining_label(self) -> int | None:
        """The label with the fewest unassigned positives (ties: lowest column), if any."""
        counts = self.remaining_per_label
        if not counts.any():
            return None
        return int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))

    def is_unassigned(self, image: int) -> bool:
        return bool(self.part_of[image] < 0)

    def assign(self, image: int, label: int | None) -> None:
        part = self._choose_part(image, label)
        row = self.positives[image]
        self.part_of[image] = part
        self.unassigned_count -= 1
        self.remaining_per_label -= row
        self.wanted_total[part] -= 1
        self.wanted_per_label[part] -= row
        self.assigned_total[part] += 1
        self.assigned_per_label[part] += row

    def _choose_part(self, image: int, label: int | None) -> int:
        candidates = list(range(len(self.wanted_total)))
        # Hard guarantee: when the images left are just enough to fill the empty parts,
        # they go there, so validation and test are never empty.
        empty = [p for p in candidates if self.assigned_total[p] == 0]
        if empty and self.unassigned_count <= len(empty):
            candidates = empty
        if label is not None:
            # A rare class would otherwise land wholly in train (the part wanting most of
            # it); keep its last few images for the parts that have none of it yet.
            lacking = [p for p in candidates if self.assigned_per_label[p, label] == 0]
            if lacking and self.remaining_per_label[label] <= len(lacking):
                candidates = lacking
            candidates = _most_wanted(candidates, self.wanted_per_label[:, label])
        candidates = _most_wanted(candidates, self.wanted_total)
        return candidates[self.tie_breakers[image] % len(candidates)]


def _most_wanted(candidates: list[int], wanted: np.ndarray) -> list[int]:
    best = max(wanted[p] for p in candidates)
    return [p for p in candidates if wanted[p] >= best - _TIE_TOLERANCE]


def _validated_positives(keys: Sequence[str], label_matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(label_matrix)
    if matrix.ndim != 2:
        raise ValueError(
            f"label_matrix must be 2-dimensional (images x classes), got shape {matrix.shape}"
        )
    if matrix.shape[0] != len(keys):
        raise ValueError(
            f"label_matrix has {matrix.shape[0]} rows but there are {len(keys)} keys; "
            "pass one label row per key"
        )
    if len(keys) < MIN_IMAGES:
        raise ValueError(
            f"at least {MIN_IMAGES} labeled images are needed to split into train, validation "
            f"and test, got {len(keys)}"
        )
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise ValueError(f"image key {key!r} appears more than once; keys must be unique")
        seen.add(key)
    if not (np.isin(matrix, (0, 1)) | np.isnan(matrix.astype(np.float64))).all():
        raise ValueError("label_matrix must hold only 0 and 1 (a multi-hot matrix), or NaN")
    # Stratification spreads the known positives; an unknown entry is no positive to spread.
    return (matrix == 1).astype(np.int64)


def _validated_fractions(validation_fraction: float, test_fraction: float) -> np.ndarray:
    for name, value in (
        ("validation_fraction", validation_fraction),
        ("test_fraction", test_fraction),
    ):
        if not 0 < value < 1:
            raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {value}")
    train_fraction = 1.0 - validation_fraction - test_fraction
    if train_fraction <= 0:
        raise ValueError(
            f"validation_fraction + test_fraction must be less than 1 to leave images for "
            f"training, got {validation_fraction} + {test_fraction}"
        )
    return np.array([train_fraction, validation_fraction, test_fraction], dtype=np.float64)
