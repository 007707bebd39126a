"""infra/prefect.yaml declares the deployments `mlc serve` registers, with the same defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from flows.deployments import DEPLOYMENT_TAGS, deployment_specs
from mlc_core.settings import load_settings

PREFECT_YAML = Path(__file__).resolve().parents[2] / "infra" / "prefect.yaml"


def _declared() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(PREFECT_YAML.read_text())
    return {deployment["name"]: deployment for deployment in document["deployments"]}


def test_prefect_yaml_declares_each_served_deployment_with_its_entrypoint() -> None:
    declared = _declared()

    assert {name: d["entrypoint"] for name, d in declared.items()} == {
        spec.name: spec.entrypoint for spec in deployment_specs(load_settings())
    }


def test_prefect_yaml_schedules_match_the_default_settings() -> None:
    settings = load_settings()
    declared = _declared()

    for spec in deployment_specs(settings):
        expected = (
            [{"cron": spec.cron, "timezone": settings.orchestration.timezone}]
            if spec.cron
            else None
        )
        assert declared[spec.name]["schedules"] == expected, spec.full_name


def test_prefect_yaml_parameters_tags_and_concurrency_match_the_served_ones() -> None:
    declared = _declared()

    for spec in deployment_specs(load_settings()):
        deployment = declared[spec.name]
        assert deployment["parameters"] == spec.parameters, spec.full_name
        assert deployment["tags"] == DEPLOYMENT_TAGS, spec.full_name
        expected = (
            {"limit": spec.concurrency_limit, "collision_strategy": spec.collision_strategy}
            if spec.concurrency_limit is not None
            else None
        )
        assert deployment.get("concurrency_limit") == expected, spec.full_name


def test_prefect_yaml_sends_every_deployment_to_the_process_pool_by_default() -> None:
    assert {d["work_pool"]["name"] for d in _declared().values()} == {"mlc-process"}
