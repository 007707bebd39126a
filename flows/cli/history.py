"""The commands that look back: ``mlc runs`` (the run history) and ``mlc failures`` (the ledger)."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.app import app, print_document
from flows.cli.tags import key_function
from flows.common import opened_workspace
from mlc_core.db.models import RUN_KINDS
from mlc_core.errors import MlcError


@app.command()
def runs(
    kind: Annotated[str | None, typer.Option(help=f"only runs of: {', '.join(RUN_KINDS)}")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
) -> None:
    """The most recent runs with their status, counts and throughput."""
    from mlc_core.db.runs import recent_runs
    from mlc_core.reports.tags import runs_table

    if kind is not None and kind not in RUN_KINDS:
        raise MlcError(f"unknown run kind {kind!r}; expected one of {', '.join(RUN_KINDS)}")
    with opened_workspace() as workspace, workspace.transaction() as session:
        found = recent_runs(session, kind=kind, limit=limit)
    print_document(runs_table(found))


@app.command()
def failures(
    reason: Annotated[
        str | None, typer.Option(help="only reasons containing this text (any case)")
    ] = None,
    prefix: Annotated[str, typer.Option(help="only keys starting with this")] = "",
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
) -> None:
    """The images whose latest scoring failed, with the reason; newest first."""
    from mlc_core.db.images import count_failures_by_reason, list_failures
    from mlc_core.reports.tags import failures_table

    with opened_workspace() as workspace, workspace.transaction() as session:
        prefix_uri = workspace.store.root_uri + prefix if prefix else ""
        found = list_failures(session, reason=reason, uri_prefix=prefix_uri, limit=limit)
        counts = count_failures_by_reason(session)
        key_of = key_function(workspace)
    print_document(failures_table(found, counts, key_of))
