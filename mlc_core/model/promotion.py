"""Whether a freshly trained model should replace the champion.

Both models are measured on the same test split (the champion's), so their metrics are
comparable. A candidate must beat the champion's mean average precision by a margin, so noise
between two training runs does not churn the champion, and must not buy that gain by badly
hurting one class, which people relying on that tag would notice at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Metrics come back from JSON; equal values may differ in the last bits after arithmetic.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class PromotionDecision:
    """The verdict, and one sentence (with the numbers) saying why."""

    promote: bool
    reason: str


def decide_promotion(
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    *,
    margin: float,
    max_class_ap_drop: float,
) -> PromotionDecision:
    """Decide whether ``candidate`` should become champion.

    The candidate is promoted when there is no champion, or when both hold:

    - its mAP is at least the champion's mAP plus ``margin``;
    - no class's AP is more than ``max_class_ap_drop`` below the champion's.

    Both are computed over the classes the two models share and for which both have a
    defined AP; when the class lists differ, the reason says which classes were added or
    removed. Models that share no such class are not promoted automatically.

    Args:
        candidate: metrics of the new model, as returned by ``evaluate_predictions``.
        champion: metrics of the champion on the same test split, or ``None`` if there is none.
        margin: how much mAP the candidate must gain.
        max_class_ap_drop: the largest AP loss allowed on any single class, at least 0.

    Returns:
        The decision, with a reason that quotes the numbers compared.

    Raises:
        ValueError: a metrics dict lacks ``average_precision``, or ``max_class_ap_drop`` < 0.
    """
    if max_class_ap_drop < 0:
        raise ValueError(f"max_class_ap_drop must be at least 0, got {max_class_ap_drop}")
    candidate_ap = _average_precision(candidate, "candidate")
    if champion is None:
        return PromotionDecision(
            True, "no champion yet, so the candidate becomes the first champion"
        )
    champion_ap = _average_precision(champion, "champion")
    shared = _shared_classes(candidate_ap, champion_ap)
    scope = _scope(candidate_ap, champion_ap, len(shared))
    if not shared:
        no_shared_class = (
            "candidate and champion share no class with a defined AP on the test split, so "
            "they cannot be compared; promote the candidate by hand if it is wanted"
        )
        return PromotionDecision(False, _sentence(no_shared_class, scope))
    champion_map = sum(pair[0] for pair in shared.values()) / len(shared)
    candidate_map = sum(pair[1] for pair in shared.values()) / len(shared)
    failures = _shortcomings(shared, champion_map, candidate_map, margin, max_class_ap_drop)
    if failures:
        return PromotionDecision(False, _sentence(*failures, scope))
    return PromotionDecision(
        promote=True,
        reason=_sentence(
            f"candidate mAP {candidate_map:.3f} beats champion mAP {champion_map:.3f} by "
            f"{candidate_map - champion_map:.3f} (margin {margin:g}) and no class AP dropped "
            f"more than {max_class_ap_drop:g}",
            scope,
        ),
    )


def _shared_classes(
    candidate_ap: dict[str, float | None], champion_ap: dict[str, float | None]
) -> dict[str, tuple[float, float]]:
    """name -> (champion AP, candidate AP), for the classes both can be judged on."""
    shared: dict[str, tuple[float, float]] = {}
    for name, champion_value in champion_ap.items():
        candidate_value = candidate_ap.get(name)
        if champion_value is not None and candidate_value is not None:
            shared[name] = (float(champion_value), float(candidate_value))
    return shared


def _shortcomings(
    shared: dict[str, tuple[float, float]],
    champion_map: float,
    candidate_map: float,
    margin: float,
    max_class_ap_drop: float,
) -> list[str]:
    """Why the candidate falls short, one clause per rule it breaks."""
    failures: list[str] = []
    if candidate_map - champion_map < margin - _TOLERANCE:
        failures.append(
            f"candidate mAP {candidate_map:.3f} does not beat champion mAP {champion_map:.3f} "
            f"by the required margin {margin:g}"
        )
    # Worst drop first, so the reason names the class that hurts most.
    dropped = sorted(
        (
            name
            for name, (before, after) in shared.items()
            if before - after > max_class_ap_drop + _TOLERANCE
        ),
        key=lambda name: (shared[name][1] - shared[name][0], name),
    )
    if dropped:
        before, after = shared[dropped[0]]
        others = f", and {len(dropped) - 1} more class(es) dropped too" if len(dropped) > 1 else ""
        failures.append(
            f"class {dropped[0]!r} AP dropped from {before:.3f} to {after:.3f} "
            f"(more than the allowed {max_class_ap_drop:g}){others}"
        )
    return failures


def _average_precision(metrics: dict[str, Any], which: str) -> dict[str, float | None]:
    per_class = metrics.get("average_precision")
    if not isinstance(per_class, dict):
        raise ValueError(
            f"the {which} metrics have no 'average_precision' mapping; pass the dict returned "
            "by evaluate_predictions"
        )
    return per_class


def _scope(
    candidate_ap: dict[str, float | None], champion_ap: dict[str, float | None], shared: int
) -> str:
    """Say which classes were compared when the two class lists differ; else nothing."""
    added = sorted(set(candidate_ap) - set(champion_ap))
    removed = sorted(set(champion_ap) - set(candidate_ap))
    if not added and not removed:
        return ""
    changes = []
    if added:
        changes.append(f"adds {', '.join(map(repr, added))}")
    if removed:
        changes.append(f"drops {', '.join(map(repr, removed))}")
    return (
        f"the class lists differ (the candidate {' and '.join(changes)}), so mAP and class AP "
        f"were compared over the {shared} class(es) both have with a defined AP"
    )


def _sentence(*clauses: str) -> str:
    return "; ".join(clause for clause in clauses if clause)
