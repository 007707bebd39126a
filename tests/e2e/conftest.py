"""The end-to-end stack: the test Prefect server, SeaweedFS and a fresh PostgreSQL database.

``e2e_stack`` (session) creates the database and a bucket holding synthetic images under
``images/`` with a labels manifest at ``labels/labels.csv``, and the environment an ``mlc`` or
``prefect`` subprocess needs to use all three. Training is tiny (32 px, 2 epochs).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from mlc_core.db.engine import create_db_engine
from mlc_core.db.migrate import upgrade_schema
from mlc_core.jobs.demo_data import make_synthetic_images
from tests.fixtures.prefect import PrefectServer, log_tail
from tests.fixtures.s3 import S3Server

REPO_ROOT = Path(__file__).resolve().parents[2]
LABELLED_IMAGES = 30
TINY_TRAINING_ENV = {
    "MLC_TRAINING__IMAGE_SIZE": "32",
    "MLC_TRAINING__EPOCHS": "2",
    "MLC_TRAINING__BATCH_SIZE": "16",
    "MLC_TRAINING__MIN_POSITIVES": "2",
    "MLC_TRAINING__EARLY_STOPPING_PATIENCE": "2",
}
TIMEZONE = "Europe/Berlin"


@dataclass(frozen=True)
class Stack:
    """What the end-to-end tests run against."""

    server: PrefectServer
    s3: S3Server
    database_url: str
    bucket: str
    store_url: str
    env: dict[str, str]
    workdir: Path

    def put_images(self, folder: str, count: int, seed: int) -> dict[str, tuple[str, ...]]:
        """Upload synthetic images under ``folder``; returns key -> true tags."""
        truth = {}
        for image in make_synthetic_images(count, seed=seed, side=48):
            key = f"{folder}{image.name}"
            self.s3.client().put_object(Bucket=self.bucket, Key=f"store/{key}", Body=image.jpeg)
            truth[key] = image.tags
        return truth

    def scalar(self, sql: str, **parameters: Any) -> Any:
        """One value from the stack's database."""
        engine = create_db_engine(self.database_url)
        try:
            with engine.connect() as connection:
                return connection.execute(text(sql), parameters).scalar_one()
        finally:
            engine.dispose()

    def run(
        self, *command: str, timeout: float = 300, log: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command of this venv (``mlc``, ``prefect``) in the stack's environment."""
        executable = Path(sys.executable).parent / command[0]
        completed = subprocess.run(
            [str(executable), *command[1:]],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if log is not None:
            with log.open("a") as out:
                out.write(f"$ {' '.join(command)}\n{completed.stdout}{completed.stderr}")
        return completed


def subprocess_env(server: PrefectServer, **extra: str) -> dict[str, str]:
    """This process's environment without MLC_ settings, pointed at the test Prefect server."""
    base = {
        name: value
        for name, value in os.environ.items()
        if not (name.startswith("MLC_") and not name.startswith("MLC_TEST_"))
        and not name.startswith("PREFECT_")
    }
    return server.env(base, **extra)


def _admin_engine(url: URL) -> Any:
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


@pytest.fixture(scope="session")
def e2e_stack(
    prefect_server: PrefectServer,
    s3_server: S3Server,
    postgres_server_url: URL,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The servers, a fresh migrated database, a bucket with labelled images, and the env."""
    workdir = tmp_path_factory.mktemp("e2e")
    name = f"mlc_e2e_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(postgres_server_url)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    database_url = postgres_server_url.set(database=name).render_as_string(hide_password=False)
    engine = create_db_engine(database_url)
    upgrade_schema(engine)
    engine.dispose()
    bucket = s3_server.create_bucket()
    env = subprocess_env(
        prefect_server,
        MLC_HOME=str(workdir / "mlc-home"),
        MLC_DATABASE_URL=database_url,
        MLC_STORAGE_URL=f"s3://{bucket}/store",
        MLC_SCORING__READ_WORKERS="4",
        MLC_ORCHESTRATION__TIMEZONE=TIMEZONE,
        AWS_ENDPOINT_URL=s3_server.endpoint_url,
        AWS_ACCESS_KEY_ID=s3_server.access_key,
        AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
        AWS_DEFAULT_REGION=s3_server.region,
        AWS_EC2_METADATA_DISABLED="true",
        **TINY_TRAINING_ENV,
    )
    stack = Stack(
        server=prefect_server,
        s3=s3_server,
        database_url=database_url,
        bucket=bucket,
        store_url=f"s3://{bucket}/store",
        env=env,
        workdir=workdir,
    )
    truth = stack.put_images("images/", LABELLED_IMAGES, seed=5)
    manifest = "key,tags\n" + "".join(f"{key},{'|'.join(tags)}\n" for key, tags in truth.items())
    s3_server.client().put_object(
        Bucket=bucket, Key="store/labels/labels.csv", Body=manifest.encode()
    )
    try:
        yield stack
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
        client = s3_server.client()
        with contextlib.suppress(Exception):
            listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
            for item in listed:
                client.delete_object(Bucket=bucket, Key=item["Key"])
            client.delete_bucket(Bucket=bucket)


def run_deployment_to_the_end(
    stack: Stack, name: str, parameters: dict[str, Any], *, log: Path, timeout: float = 600
) -> Any:
    """Trigger a deployment through the API and wait for its run to reach a final state."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: stack.server.api_url}):
        # Polled every second, not every five: a run is seen finished up to 4 s sooner.
        flow_run: Any = run_deployment(
            name, parameters=parameters, timeout=timeout, poll_interval=1
        )
    if not flow_run.state.is_final():
        pytest.fail(
            f"{name} run {flow_run.name} is still {flow_run.state.name} after {timeout:.0f} s; "
            f"log {log}:\n{log_tail(log, 60)}",
            pytrace=False,
        )
    return flow_run
