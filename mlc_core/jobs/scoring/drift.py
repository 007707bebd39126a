"""Drift: did this run's images get each tag about as often as the champion's validation images?

When the images arriving change (a new camera, a new season, a broken upstream resize), the
share of images that get a tag moves away from the share the champion gave its own validation
images when it was trained. Comparing predicted rates with predicted rates keeps the model's
own bias out of the comparison: what moves is the input.

The measure is the population stability index of each class's tag / no tag split:
``(r - q) ln(r / q) + (q - r) ln((1 - r) / (1 - q))`` for a run rate ``r`` and reference rate
``q``. Unlike a plain rate ratio it does not blow up for rare classes (0.5% to 1.5% is a
ratio of 3 but a small PSI) and it weighs a class going missing as much as one taking over;
0.1 to 0.25 is the usual band of a moderate shift. Under no shift a run of ``n`` images has
a PSI near ``1 / n`` per class, so runs smaller than ``MLC_DRIFT__MIN_IMAGES`` are not checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlc_core.db.models import ModelVersion
    from mlc_core.jobs.workspace import Workspace

# Rates are clipped away from 0 and 1: a class never tagged in validation would otherwise
# make any tag in a run infinitely surprising.
_RATE_FLOOR = 1e-4


@dataclass(frozen=True)
class DriftBasis:
    """What a run's rates are compared with: the champion's tag rates on its validation
    images, and the bound and minimum run size from the settings."""

    reference_rates: dict[str, float] = field(default_factory=dict)
    psi_limit: float = 0.2
    min_images: int = 100


@dataclass(frozen=True)
class DriftFlag:
    """A class whose tag rate moved beyond the bound."""

    tag: str
    run_rate: float
    reference_rate: float
    psi: float


def population_stability(run_rate: float, reference_rate: float) -> float:
    """The PSI of a two-bin (tagged / not tagged) distribution."""
    r = min(max(run_rate, _RATE_FLOOR), 1 - _RATE_FLOOR)
    q = min(max(reference_rate, _RATE_FLOOR), 1 - _RATE_FLOOR)
    return (r - q) * math.log(r / q) + (q - r) * math.log((1 - r) / (1 - q))


def drifted_classes(
    tagged_by_class: Mapping[str, int], scored: int, basis: DriftBasis | None
) -> list[DriftFlag]:
    """The classes whose tag rate among ``scored`` images is beyond the basis's bound, most
    drifted first; none when there is no basis or too few images to tell."""
    if basis is None or not basis.reference_rates or scored < basis.min_images:
        return []
    flags = []
    for tag, reference in basis.reference_rates.items():
        rate = tagged_by_class.get(tag, 0) / scored
        psi = population_stability(rate, reference)
        if psi > basis.psi_limit:
            flags.append(DriftFlag(tag, round(rate, 4), round(reference, 4), round(psi, 4)))
    return sorted(flags, key=lambda flag: -flag.psi)


def describe_drift(
    tagged_by_class: Mapping[str, int], scored: int, basis: DriftBasis | None
) -> str:
    """A sentence on whether and why drift was or was not checked."""
    if basis is None or not basis.reference_rates:
        return "not checked: the model has no validation tag rates (trained before mlc kept them)"
    if scored < basis.min_images:
        return f"not checked: {scored} images scored, fewer than {basis.min_images}"
    flags = drifted_classes(tagged_by_class, scored, basis)
    if not flags:
        return f"no class beyond PSI {basis.psi_limit:g} of the champion's validation rates"
    return "; ".join(
        f"{f.tag} tagged on {f.run_rate:.1%} of images, {f.reference_rate:.1%} in validation "
        f"(PSI {f.psi:.2f})"
        for f in flags
    )


def drift_basis_of(
    metrics: Mapping[str, object], *, psi_limit: float, min_images: int
) -> DriftBasis | None:
    """The basis a model version's metrics give (its ``validation_tag_rates``), if any."""
    rates = metrics.get("validation_tag_rates")
    if not isinstance(rates, Mapping) or not rates:
        return None
    return DriftBasis(
        {str(tag): float(rate) for tag, rate in rates.items()},
        psi_limit=psi_limit,
        min_images=min_images,
    )


def basis_for_drift(workspace: Workspace, model: ModelVersion) -> DriftBasis | None:
    """The basis for runs scoring with ``model``, bounds from the workspace's settings."""
    drift = workspace.settings.drift
    return drift_basis_of(
        model.metrics or {}, psi_limit=drift.psi_limit, min_images=drift.min_images
    )
