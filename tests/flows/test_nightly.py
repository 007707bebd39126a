"""The nightly flow, run in this process against the test Prefect server."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.artifacts import NIGHTLY_REPORT_KEY
from flows.nightly import nightly_flow
from mlc_core.jobs.workspace import open_workspace
from mlc_core.settings import load_settings
from tests.fixtures.prefect import PrefectServer, read_artifacts
from tests.jobs.conftest import TINY_TRAINING, labels_csv, put_synthetic_images


@pytest.fixture
def tiny_training(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in TINY_TRAINING.items():
        monkeypatch.setenv(f"MLC_TRAINING__{name.upper()}", str(value))


def test_a_nightly_run_with_nothing_labelled_completes_without_scoring_or_training(
    prefect_api: PrefectServer, isolated_mlc_environment: Path
) -> None:
    state = nightly_flow(return_state=True)

    result = state.result()
    assert result.scoring is None
    assert result.retrain is None
    [report] = read_artifacts(NIGHTLY_REPORT_KEY, state.state_details.flow_run_id)
    assert "there is no champion model yet" in report.data
    assert "there are no labels to train on" in report.data


@pytest.mark.slow
def test_the_first_night_with_a_labels_manifest_trains_a_champion_then_scores_the_images(
    prefect_api: PrefectServer, isolated_mlc_environment: Path, tiny_training: None
) -> None:
    settings = load_settings()
    workspace = open_workspace(settings)
    try:
        truth = put_synthetic_images(workspace, 40)
        workspace.store.put(settings.labels_key, labels_csv(truth))
    finally:
        workspace.close()

    result = nightly_flow()

    assert result.decision.retrain
    assert result.retrain.labels is None  # the nightly run imported the manifest itself
    assert result.retrain.training.status == "champion"
    assert result.scoring.model_version == result.retrain.training.version
    assert result.scoring.scored == len(truth)
