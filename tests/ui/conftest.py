"""The web page over the tagged workspace of :mod:`tests.tagged`, through an in-process client."""

from __future__ import annotations

import json
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


def give_metrics(workspace: Workspace) -> None:
    """Per-class test metrics for v1 (champion) and v2, and v2's card comparing the two on
    the champion's test images, as training records them."""
    from mlc_core.db.model_versions import require_model_version, set_decision

    champion = {"beach": 0.8, "dog": 0.6, "sky": 0.7}
    candidate = {"beach": 0.9, "dog": 0.4, "sky": 0.85}
    with workspace.transaction() as session:
        for name, per_class in (("v1", champion), ("v2", candidate)):
            version = require_model_version(session, name)
            version.metrics = {
                "mean_average_precision": sum(per_class.values()) / 3,
                "average_precision": per_class,
            }
        set_decision(
            session,
            require_model_version(session, "v2"),
            "kept v1: dog's AP fell 0.22 (from 0.62 to 0.40), more than the 0.05 allowed",
        )
    comparison = {
        "candidate": {"average_precision": {**candidate, "dog": 0.4}},
        "champion": {"average_precision": {**champion, "dog": 0.62}},
        "images": 40,
    }
    card = {"version": "v2", "extra": {"champion_comparison": comparison}}
    workspace.store.put("models/v2/card.json", json.dumps(card).encode())
