"""The web page over the tagged workspace of :mod:`tests.tagged`, through an in-process client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from flows.ui import create_app
from mlc_core.jobs.workspace import Workspace
from mlc_core.settings import load_settings
from tests.tagged import CHAMPION_SCORES, invoke, run_mlc, tagged, tagged_embedded

__all__ = ["CHAMPION_SCORES", "invoke", "run_mlc", "tagged", "tagged_embedded"]
# The page answers only requests addressed to a loopback name when it has no token.
BASE_URL = "http://127.0.0.1:8765"


def client_for(**overrides: Any) -> TestClient:
    """A client of the app over the ``MLC_`` environment, with settings overridden."""
    return TestClient(create_app(load_settings(**overrides)), base_url=BASE_URL)


@pytest.fixture
def client(tagged: Workspace) -> Iterator[TestClient]:
    """The page over the tagged workspace, on SQLite and on PostgreSQL + S3."""
    with client_for() as test_client:
        yield test_client


@pytest.fixture
def embedded_client(tagged_embedded: Workspace) -> Iterator[TestClient]:
    """The page over the tagged workspace on the embedded defaults only."""
    with client_for() as test_client:
        yield test_client


def csrf_of(client: TestClient) -> str:
    """The CSRF token the page's forms carry."""
    token: str = client.app.state.ui.csrf_token  # type: ignore[attr-defined]
    return token
