"""The ``mlc`` command: ``app`` holds the command groups, ``jobs`` the commands that run flows,
``catalog`` the ones that read or change rows, ``server`` the kept Prefect server.

It lives beside the flows because it is an entry point that wires settings to flows; it parses
arguments and prints, and the work is in ``mlc_core``.
"""

from flows.cli import catalog, history, jobs, labels, server, tags, ui
from flows.cli.app import app, main

__all__ = ["app", "catalog", "history", "jobs", "labels", "main", "server", "tags", "ui"]
