"""The ordered label vocabulary and the three forms a label set takes.

A model version owns an ordered list of class names; position ``i`` of every multi-hot vector
and every probability vector of that version means ``classes[i]``. Tag sets are what people
see: the classes whose probability reaches the class's threshold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

TAG_SEPARATOR = "|"
# Tags become column values, file names and CLI arguments: keep them to a safe alphabet.
TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\- ]{0,62}$")


def normalize_tag(raw: str) -> str:
    """Return the canonical form of a tag (trimmed, lower case).

    Raises:
        ValueError: the tag is empty or has characters outside the tag alphabet.
    """
    tag = raw.strip().lower()
    if not tag:
        raise ValueError("empty tag")
    if not TAG_PATTERN.match(tag):
        raise ValueError(
            f"tag {raw!r} has characters outside letters, digits, space and _.:- "
            "(or is longer than 63 characters)"
        )
    return tag


def parse_tags(field: str) -> list[str]:
    """Split a ``a|b|c`` field into normalized tags, keeping first occurrences in order.

    Raises:
        ValueError: a tag is empty (``a||b``) or malformed.
    """
    if not field.strip():
        return []
    tags: list[str] = []
    for raw in field.split(TAG_SEPARATOR):
        tag = normalize_tag(raw)
        if tag not in tags:
            tags.append(tag)
    return tags


@dataclass(frozen=True)
class LabelVocabulary:
    """An ordered, duplicate-free list of class names."""

    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"duplicate class names in {list(self.classes)}")
        if not self.classes:
            raise ValueError("a label vocabulary needs at least one class")

    @classmethod
    def from_tags(cls, tags: Iterable[str]) -> LabelVocabulary:
        """Build a vocabulary from any tags, sorted so the order does not depend on input order."""
        return cls(tuple(sorted(set(tags))))

    def __len__(self) -> int:
        return len(self.classes)

    def index(self, tag: str) -> int:
        return self.classes.index(tag)

    def to_multi_hot(self, tags: Iterable[str]) -> np.ndarray:
        """Return a float32 vector with 1 at each known tag; unknown tags are ignored."""
        vector = np.zeros(len(self.classes), dtype=np.float32)
        positions = {name: i for i, name in enumerate(self.classes)}
        for tag in tags:
            if tag in positions:
                vector[positions[tag]] = 1.0
        return vector

    def tags_from_probabilities(
        self,
        probabilities: Sequence[float] | np.ndarray,
        thresholds: Sequence[float],
        *,
        top_class_fallback: bool = False,
    ) -> list[tuple[str, float]]:
        """Return ``(tag, probability)`` for every class at or above its threshold.

        Sorted by probability, highest first. With ``top_class_fallback``, an image where no
        class reaches its threshold gets the single most probable class instead of no tag,
        the rule of :func:`predicted_labels`.
        """
        if len(probabilities) != len(self.classes) or len(thresholds) != len(self.classes):
            raise ValueError(
                f"expected {len(self.classes)} probabilities and thresholds, got "
                f"{len(probabilities)} and {len(thresholds)}"
            )
        # Plain Python rather than predicted_labels: the scoring job calls this once per
        # image, and building arrays for five numbers costs more than the comparisons.
        pairs = [
            (name, float(p))
            for name, p, t in zip(self.classes, probabilities, thresholds, strict=True)
            if p >= t
        ]
        if top_class_fallback and not pairs:
            top = max(range(len(self.classes)), key=lambda column: probabilities[column])
            pairs = [(self.classes[top], float(probabilities[top]))]
        return sorted(pairs, key=lambda pair: -pair[1])


def predicted_labels(
    probabilities: np.ndarray, thresholds: Sequence[float], *, top_class_fallback: bool = False
) -> np.ndarray:
    """Return the boolean ``(N, C)`` matrix of classes each image is tagged with.

    A class is tagged when its probability is at or above its threshold. With
    ``top_class_fallback``, a row where no class reaches its threshold gets its most probable
    class. That suits collections where every image carries at least one of the classes;
    where images may show none of them, it turns every such image into a wrong tag, so it is
    off by default.

    Raises:
        ValueError: ``probabilities`` is not 2-D or has not one column per threshold.
    """
    scores = np.asarray(probabilities, dtype=np.float64)
    cutoffs = np.asarray(thresholds, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != cutoffs.shape[0]:
        raise ValueError(
            f"expected probabilities of shape (N, {cutoffs.shape[0]}), got {scores.shape}"
        )
    chosen = scores >= cutoffs
    if top_class_fallback and scores.shape[1] > 0:
        untagged = np.flatnonzero(~chosen.any(axis=1))
        chosen[untagged, scores[untagged].argmax(axis=1)] = True
    return chosen
