"""`mlc serve` end to end: deployments, schedules, runs triggered with parameters, the UI.

One `mlc serve` process runs for this module against the test Prefect server, SeaweedFS and a
fresh PostgreSQL database; each triggered flow run executes in a subprocess of it, exactly as
in production.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from flows.artifacts import RETRAIN_REPORT_KEY
from tests.e2e.conftest import (
    LABELLED_IMAGES,
    REPO_ROOT,
    TIMEZONE,
    Stack,
    run_deployment_to_the_end,
)
from tests.fixtures.prefect import (
    PrefectServer,
    log_tail,
    read_artifacts,
    start_process,
    stop_process,
)

pytestmark = pytest.mark.slow

DEPLOYMENTS = ("mlc-nightly/nightly", "mlc-retrain/retrain", "mlc-score/score")
SERVE_START_TIMEOUT_SECONDS = 240.0
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")


def _registered(client: Any) -> bool:
    from prefect.exceptions import ObjectNotFound

    try:
        for name in DEPLOYMENTS:
            client.read_deployment_by_name(name)
    except ObjectNotFound:
        return False
    return True


@pytest.fixture(scope="module")
def served(e2e_stack: Stack) -> Iterator[Path]:
    """`mlc serve` running against the stack; yields its log file."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    log = e2e_stack.workdir / "serve.log"
    process = start_process(
        [str(Path(sys.executable).parent / "mlc"), "serve"],
        env=e2e_stack.env,
        cwd=e2e_stack.workdir,
        log=log,
    )
    try:
        deadline = time.monotonic() + SERVE_START_TIMEOUT_SECONDS
        with (
            temporary_settings(updates={PREFECT_API_URL: e2e_stack.server.api_url}),
            get_client(sync_client=True) as client,
        ):
            while not _registered(client):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"`mlc serve` did not register {', '.join(DEPLOYMENTS)} within "
                        f"{SERVE_START_TIMEOUT_SECONDS:.0f} s (exit status "
                        f"{process.poll()}); log {log}:\n{log_tail(log)}",
                        pytrace=False,
                    )
                time.sleep(1)
        yield log
    finally:
        stop_process(process, timeout=30)


@pytest.fixture(scope="module")
def retrain_run(e2e_stack: Stack, served: Path) -> Any:
    """A run of the retrain deployment with its default parameters, finished."""
    return run_deployment_to_the_end(e2e_stack, "mlc-retrain/retrain", {}, log=served)


def _assert_completed(flow_run: Any, log: Path) -> None:
    state = flow_run.state
    assert state.is_completed(), f"{state.name}: {state.message}\n{log_tail(log, 60)}"


def test_serve_registers_each_deployment_with_its_cron_schedule_and_timezone(
    served: Path, prefect_api: PrefectServer
) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        schedules: dict[str, list[tuple[Any, Any]]] = {
            name: [
                (getattr(item.schedule, "cron", None), getattr(item.schedule, "timezone", None))
                for item in client.read_deployment_by_name(name).schedules
            ]
            for name in DEPLOYMENTS
        }

    assert schedules == {
        "mlc-nightly/nightly": [("0 2 * * *", TIMEZONE)],
        "mlc-retrain/retrain": [("0 3 * * 0", TIMEZONE)],
        "mlc-score/score": [],
    }


def test_the_retrain_deployment_imports_the_manifest_and_promotes_a_champion(
    retrain_run: Any, served: Path, e2e_stack: Stack
) -> None:
    _assert_completed(retrain_run, served)
    assert e2e_stack.scalar("select count(distinct image_uri) from labels") == LABELLED_IMAGES
    assert e2e_stack.scalar("select version from model_versions where status = 'champion'")


def test_the_retrain_deployment_publishes_its_report_as_a_markdown_artifact(
    retrain_run: Any, prefect_api: PrefectServer
) -> None:
    [report] = read_artifacts(RETRAIN_REPORT_KEY, retrain_run.id)

    assert report.type == "markdown"
    assert "**Decision:**" in report.data
    assert "| class | AP | threshold | positives |" in report.data


def test_the_score_deployment_scores_the_prefix_it_is_given_into_postgresql(
    retrain_run: Any, served: Path, e2e_stack: Stack
) -> None:
    incoming = e2e_stack.put_images("incoming/", 8, seed=9)

    flow_run = run_deployment_to_the_end(
        e2e_stack,
        "mlc-score/score",
        {"prefixes": ["incoming/"], "mode": "new", "batch_size": 4},
        log=served,
    )

    _assert_completed(flow_run, served)
    scored = e2e_stack.scalar(
        "select count(*) from scores join images on images.id = scores.image_id "
        "where images.uri like :prefix",
        prefix=f"{e2e_stack.store_url}/incoming/%",
    )
    assert scored == len(incoming)


def test_a_failing_run_ends_failed_with_its_error_and_the_database_stays_consistent(
    retrain_run: Any, served: Path, e2e_stack: Stack
) -> None:
    champion = e2e_stack.scalar("select version from model_versions where status = 'champion'")
    versions = e2e_stack.scalar("select count(*) from model_versions")

    flow_run = run_deployment_to_the_end(
        e2e_stack,
        "mlc-retrain/retrain",
        {"import_labels": False, "training": {"backbone": "no_such_backbone"}},
        log=served,
    )

    assert flow_run.state.is_failed()
    assert "unknown backbone 'no_such_backbone'" in flow_run.state.message
    last_training = "select {} from runs where kind = 'train' order by id desc limit 1"
    assert e2e_stack.scalar(last_training.format("status")) == "failed"
    assert "no_such_backbone" in e2e_stack.scalar(last_training.format("error"))
    assert e2e_stack.scalar("select count(*) from model_versions") == versions
    assert (
        e2e_stack.scalar("select version from model_versions where status = 'champion'") == champion
    )


def _chromium(*arguments: str, url: str) -> subprocess.CompletedProcess[str]:
    if not CHROMIUM.is_file() and shutil.which("chromium") is None:
        pytest.fail(
            "the UI test needs Chromium at /usr/bin/chromium; install it with "
            "`apt-get install -y chromium` (CI's .ci/run does)",
            pytrace=False,
        )
    return subprocess.run(
        [
            str(CHROMIUM) if CHROMIUM.is_file() else "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--virtual-time-budget=10000",
            "--window-size=1600,900",
            *arguments,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def test_the_prefect_ui_lists_the_mlc_deployments_with_their_schedules(
    served: Path, prefect_server: PrefectServer
) -> None:
    url = f"{prefect_server.ui_url}/deployments"
    expected = (
        "mlc-nightly",
        "mlc-retrain",
        "mlc-score",
        "At 02:00 AM every day",
        "At 03:00 AM, only on Sunday",
    )
    # The page fills in from API calls made in real time; on a busy machine the first load
    # can end before they answer, so it is loaded again (a few times at most).
    text = ""
    for _ in range(3):
        text = _visible_text(_chromium("--dump-dom", url=url).stdout)
        if all(part in text for part in expected):
            break
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    screenshot = ARTIFACTS_DIR / "prefect-deployments.png"
    _chromium(f"--screenshot={screenshot}", url=url)

    assert [part for part in expected if part not in text] == [], text
    assert screenshot.is_file() and screenshot.stat().st_size > 0
