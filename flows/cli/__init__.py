"""The ``mlc`` command: ``app`` holds the command groups, ``jobs`` the commands that run flows,
``catalog`` the ones that read or change rows.

It lives beside the flows because it is an entry point that wires settings to flows; it parses
arguments and prints, and the work is in ``mlc_core``.
"""

from flows.cli import catalog, history, jobs, labels, tags, ui
from flows.cli.app import app, main

__all__ = ["app", "catalog", "history", "jobs", "labels", "main", "tags", "ui"]
