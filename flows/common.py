"""What every flow and command does first: read the settings and open the workspace; loading
a flow by its entrypoint."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlc_core.jobs.workspace import Workspace, open_workspace
from mlc_core.settings import load_settings


@contextmanager
def opened_workspace() -> Iterator[Workspace]:
    workspace = open_workspace(load_settings())
    try:
        yield workspace
    finally:
        workspace.close()


def load_flow(entrypoint: str) -> Any:
    """The flow at ``entrypoint`` (``module.name``, e.g. ``flows.score.score_flow``), imported
    now: flow modules load Prefect, so only what runs a flow imports one."""
    module_name, _, attribute = entrypoint.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)
