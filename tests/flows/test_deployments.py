"""The deployments `mlc serve` registers, built from the settings."""

from __future__ import annotations

from typing import Any

import pytest

from flows.deployments import build_deployments, deployment_specs
from mlc_core.errors import SettingsError
from mlc_core.settings import load_settings


def _by_name(deployments: list[Any]) -> dict[str, Any]:
    return {f"{deployment.flow_name}/{deployment.name}": deployment for deployment in deployments}


def _crons(deployment: Any) -> list[tuple[str, str]]:
    return [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules]


def test_default_schedules_score_nightly_at_two_and_retrain_on_sunday_at_three() -> None:
    deployments = _by_name(build_deployments(load_settings()))

    assert _crons(deployments["mlc-nightly/nightly"]) == [("0 2 * * *", "UTC")]
    assert _crons(deployments["mlc-retrain/retrain"]) == [("0 3 * * 0", "UTC")]
    assert _crons(deployments["mlc-score/score"]) == []


def test_schedules_follow_the_cron_and_timezone_settings() -> None:
    settings = load_settings(
        orchestration={
            "nightly_cron": "30 1 * * 1-5",
            "retrain_cron": "",
            "score_cron": "0 * * * *",
            "timezone": "Europe/Berlin",
        }
    )

    deployments = _by_name(build_deployments(settings))

    assert _crons(deployments["mlc-nightly/nightly"]) == [("30 1 * * 1-5", "Europe/Berlin")]
    assert _crons(deployments["mlc-retrain/retrain"]) == []
    assert _crons(deployments["mlc-score/score"]) == [("0 * * * *", "Europe/Berlin")]


def test_nightly_runs_never_pile_up_and_retrains_queue() -> None:
    deployments = _by_name(build_deployments(load_settings()))

    nightly, retrain = deployments["mlc-nightly/nightly"], deployments["mlc-retrain/retrain"]
    assert nightly.concurrency_limit == 1
    assert nightly.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert retrain.concurrency_limit == 1
    assert retrain.concurrency_options.collision_strategy.value == "ENQUEUE"


def test_deployments_load_their_flows_by_module_path_wherever_mlc_is_installed() -> None:
    deployments = build_deployments(load_settings())

    assert sorted(deployment.entrypoint for deployment in deployments) == [
        "flows.nightly.nightly_flow",
        "flows.retrain.retrain_flow",
        "flows.score.score_flow",
    ]


def test_a_cron_prefect_rejects_names_its_variable() -> None:
    settings = load_settings(orchestration={"retrain_cron": "0 3 * * funday"})

    with pytest.raises(SettingsError, match="MLC_ORCHESTRATION__RETRAIN_CRON='0 3 \\* \\* funday'"):
        build_deployments(settings)


def test_a_cron_without_five_fields_is_refused_when_settings_load() -> None:
    with pytest.raises(SettingsError, match="MLC_ORCHESTRATION__NIGHTLY_CRON='0 2 \\*'"):
        load_settings(orchestration={"nightly_cron": "0 2 *"})


def test_an_unknown_timezone_is_refused_when_settings_load() -> None:
    with pytest.raises(SettingsError, match="MLC_ORCHESTRATION__TIMEZONE='Mars/Olympus'"):
        load_settings(orchestration={"timezone": "Mars/Olympus"})


def test_default_parameters_are_parameters_of_their_flows() -> None:
    settings = load_settings()
    deployments = _by_name(build_deployments(settings))

    for spec in deployment_specs(settings):
        schema = deployments[spec.full_name]._parameter_openapi_schema.model_dump()
        assert set(spec.parameters) <= set(schema["properties"]), spec.full_name
