"""What every flow and command does first: read the settings and open the workspace."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mlc_core.jobs.workspace import Workspace, open_workspace
from mlc_core.settings import load_settings


@contextmanager
def opened_workspace() -> Iterator[Workspace]:
    workspace = open_workspace(load_settings())
    try:
        yield workspace
    finally:
        workspace.close()
