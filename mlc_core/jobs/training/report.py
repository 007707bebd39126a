"""What a training run reports: plain data, importable without TensorFlow, safe to log, store
or return from a flow."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ChampionComparison:
    """Candidate and champion measured on the same test images of the champion."""

    champion_version: str
    images: int
    candidate: dict[str, Any]
    champion: dict[str, Any]


@dataclass
class TrainingReport:
    """What a training run did and decided; plain data, safe to log or return from a flow."""

    version: str
    status: str
    decision: str
    classes: list[str]
    thresholds: list[float]
    metrics: dict[str, Any]
    champion_comparison: ChampionComparison | None
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
    planned_epochs: int = 0
    budget_seconds: float | None = None
    stopped_at_budget: bool = False
    semi_supervised: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
