"""The deployments of mlc, their schedules, and ``mlc serve``.

Three deployments, each named after its flow:

- ``mlc-nightly/nightly``, at ``MLC_ORCHESTRATION__NIGHTLY_CRON`` (``0 2 * * *``): score new
  images; retrain when there is no champion yet or enough new labels arrived.
- ``mlc-retrain/retrain``, at ``MLC_ORCHESTRATION__RETRAIN_CRON`` (``0 3 * * 0``): the weekly
  retrain, and the form to retrain by hand.
- ``mlc-score/score``, at ``MLC_ORCHESTRATION__SCORE_CRON`` (none): the form to score a prefix
  now, or a frequent schedule for busy stores.

Schedules are read in ``MLC_ORCHESTRATION__TIMEZONE``. Overlap rules: a nightly run that is
still going when the next is due makes the new one cancel itself (``CANCEL_NEW``); retrains
queue behind each other (``ENQUEUE``, and the training lock however a training started);
scoring runs hold one lock per prefix (``mlc_core.jobs.locks``), so two runs over the same
prefix never overlap while different prefixes run side by side.

``infra/prefect.yaml`` declares the same deployments for a work pool; a test keeps the two in
step. Flow modules are imported only when the deployments are built, so ``mlc serve`` can say
that the Prefect API is down before it loads TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from flows.common import load_flow
from mlc_core.errors import MlcError, SettingsError
from mlc_core.settings import Settings

DEPLOYMENT_TAGS = ["mlc"]
CollisionStrategy = Literal["ENQUEUE", "CANCEL_NEW"]


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment as data: what ``mlc serve`` registers and ``infra/prefect.yaml`` declares."""

    flow_name: str
    name: str
    entrypoint: str
    cron: str | None
    cron_setting: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    concurrency_limit: int | None = None
    collision_strategy: CollisionStrategy | None = None

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


def deployment_specs(settings: Settings) -> list[DeploymentSpec]:
    """The deployments of mlc with the schedules the settings ask for."""
    orchestration = settings.orchestration
    return [
        _named_after_flow(
            "nightly",
            orchestration.nightly_cron,
            "Score new images with the champion; retrain when there is no champion yet or "
            "enough images got new labels since the last training run.",
            {"retrain": "auto"},
            concurrency_limit=1,
            collision_strategy="CANCEL_NEW",
        ),
        _named_after_flow(
            "retrain",
            orchestration.retrain_cron,
            "Import the labels manifest, train, compare with the champion on its test "
            "images, promote if better, then rescore older rows with a new champion.",
            {"import_labels": True},
            concurrency_limit=1,
            collision_strategy="ENQUEUE",
        ),
        _named_after_flow(
            "score",
            orchestration.score_cron,
            "Score images under the given prefixes with the champion (new, stale, all or "
            "failed ones).",
            {"mode": "new"},
        ),
    ]


def _named_after_flow(
    name: str,
    cron: str | None,
    description: str,
    parameters: dict[str, Any],
    *,
    concurrency_limit: int | None = None,
    collision_strategy: CollisionStrategy | None = None,
) -> DeploymentSpec:
    """The deployment ``mlc-<name>/<name>`` of ``flows.<name>.<name>_flow``.

    ``cron`` is the value of the setting ``MLC_ORCHESTRATION__<NAME>_CRON``.
    """
    return DeploymentSpec(
        flow_name=f"mlc-{name}",
        name=name,
        entrypoint=f"flows.{name}.{name}_flow",
        cron=cron,
        cron_setting=f"MLC_ORCHESTRATION__{name.upper()}_CRON",
        description=description,
        parameters=parameters,
        concurrency_limit=concurrency_limit,
        collision_strategy=collision_strategy,
    )


def build_deployments(settings: Settings) -> list[Any]:
    """The ``RunnerDeployment`` of each spec, ready for ``prefect.serve``.

    Raises:
        SettingsError: a cron expression Prefect does not accept, naming its variable.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    deployments = []
    for spec in deployment_specs(settings):
        schedules = []
        if spec.cron is not None:
            try:
                schedules.append(Cron(spec.cron, timezone=settings.orchestration.timezone))
            except ValueError as error:
                raise SettingsError(
                    f"{spec.cron_setting}={spec.cron!r}: Prefect does not accept this cron "
                    f"expression ({str(error).splitlines()[0]})"
                ) from None
        concurrency = (
            ConcurrencyLimitConfig(
                limit=spec.concurrency_limit,
                collision_strategy=ConcurrencyLimitStrategy(spec.collision_strategy or "ENQUEUE"),
            )
            if spec.concurrency_limit is not None
            else None
        )
        deployments.append(
            load_flow(spec.entrypoint).to_deployment(
                name=spec.name,
                schedules=schedules,
                parameters=spec.parameters,
                description=spec.description,
                tags=DEPLOYMENT_TAGS,
                concurrency_limit=concurrency,
                # A module path works wherever mlc is installed (a container, a worker), where
                # a file path would depend on the directory `mlc serve` was started from.
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return deployments


def check_prefect_api() -> str:
    """Check that the configured Prefect API answers; return its URL.

    Raises:
        MlcError: ``PREFECT_API_URL`` is unset, or the API cannot be reached or is unhealthy.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise MlcError(
            "PREFECT_API_URL is not set, and schedules need a running Prefect server; start "
            "one with `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        reason = str(problem).splitlines()[0] if str(problem) else type(problem).__name__
        raise MlcError(
            f"the Prefect API at {url} cannot be reached ({reason}); start the Prefect server "
            "or point PREFECT_API_URL at a running one"
        )
    return str(url)


def serve_deployments(settings: Settings, *, limit: int | None = None) -> None:
    """Register the deployments with the Prefect API and run their flow runs until stopped.

    Each flow run executes in a subprocess of this one; on shutdown the schedules are paused
    (nobody would run them) and the next start resumes them.

    Args:
        settings: the schedules, time zone and the rest of the configuration.
        limit: the most flow runs at once; ``None`` for no limit.
    """
    from prefect import serve

    serve(*build_deployments(settings), limit=limit)
