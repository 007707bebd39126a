"""Drift: a scoring run whose tag rates moved away from the champion's validation rates says so
in its report, its run record and its summary; an unshifted run and a small run do not."""

from __future__ import annotations

import math

import pytest

from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.scoring.drift import DriftBasis, drifted_classes, population_stability
from mlc_core.jobs.workspace import Workspace
from mlc_core.reports.document import to_text
from mlc_core.reports.scoring import score_summary
from tests.jobs.scoring_support import CLASSES, put_tiny_images, query, register_champion

SCORING = {"batch_size": 16}
# Thresholds of 0 tag every class of every image: each class's rate in the run is 1.
EVERY_CLASS = [0.0] * len(CLASSES)


def test_population_stability_is_zero_without_a_shift_and_grows_with_it() -> None:
    assert population_stability(0.3, 0.3) == 0.0
    assert population_stability(0.31, 0.3) < 0.001
    assert 0.05 < population_stability(0.45, 0.3) < population_stability(0.6, 0.3)
    # Symmetric in the two bins: a class vanishing counts like a class taking over.
    assert math.isclose(population_stability(0.1, 0.3), population_stability(0.9, 0.7))
    # A rate of 0 or 1 stays finite.
    assert math.isfinite(population_stability(0.0, 0.4))


def test_only_classes_beyond_the_bound_are_flagged_and_small_runs_never() -> None:
    basis = DriftBasis({"sea": 0.3, "sunset": 0.1}, psi_limit=0.2, min_images=100)

    flags = drifted_classes({"sea": 31, "sunset": 40}, 100, basis)

    assert [(f.tag, f.run_rate, f.reference_rate) for f in flags] == [("sunset", 0.4, 0.1)]
    assert drifted_classes({"sea": 31, "sunset": 40}, 99, basis) == []
    assert drifted_classes({"sunset": 40}, 100, None) == []


@pytest.mark.parametrize(
    ("validation_rate", "flagged"), [(1.0, False), (0.2, True)], ids=["unshifted", "shifted"]
)
def test_a_run_flags_a_planted_shift_in_report_record_and_summary(
    embedded_workspace: Workspace, validation_rate: float, flagged: bool
) -> None:
    workspace = embedded_workspace
    workspace.settings.drift.min_images = 20
    rates = dict.fromkeys(CLASSES, 1.0) | {"ring": validation_rate}
    register_champion(workspace, thresholds=EVERY_CLASS, metrics={"validation_tag_rates": rates})
    put_tiny_images(workspace, 24)

    report = score_images(workspace)

    assert report.scored == 24
    assert report.tagged_by_class == dict.fromkeys(CLASSES, 24)
    [(counts,)] = query(workspace, "SELECT counts FROM runs WHERE kind = 'score'")
    summary = to_text(score_summary(report))
    if flagged:
        assert [f.tag for f in report.drift] == ["ring"]
        assert "ring tagged on 100.0% of images, 20.0% in validation" in summary
        assert '"tag": "ring"' in str(counts) or "'tag': 'ring'" in str(counts)
    else:
        assert report.drift == []
        assert "drift" not in summary
        assert "no class beyond PSI 0.2" in report.drift_status


def test_a_small_run_or_an_old_model_is_not_checked(embedded_workspace: Workspace) -> None:
    workspace = embedded_workspace
    register_champion(workspace, thresholds=EVERY_CLASS)
    put_tiny_images(workspace, 4)

    report = score_images(workspace)

    assert report.drift == []
    assert report.drift_status.startswith("not checked: the model has no validation tag rates")
