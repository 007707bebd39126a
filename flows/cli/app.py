"""The ``mlc`` command's frame: the command groups, the terminal, and what every command shares.

Commands that do work run the Prefect flows, so a run started from a terminal shows up in the
Prefect UI like a scheduled one; commands that only read or change a row call ``mlc_core``
directly. What a command prints is built in :mod:`mlc_core.reports`; here it is only printed.
Expected problems print one sentence and exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mlc_core.errors import MlcError

if TYPE_CHECKING:
    from mlc_core.reports.document import Document
    from mlc_core.settings import Settings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Batch multilabel image tagging: train, score images in object storage, query tags.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema commands.")
labels_app = typer.Typer(no_args_is_help=True, help="Ground-truth label commands.")
app.add_typer(db_app, name="db")
app.add_typer(labels_app, name="labels")

console = Console()
errors = Console(stderr=True)


def settings() -> Settings:
    from mlc_core.settings import load_settings

    return load_settings()


def check_workspace() -> None:
    """Fail now, in one sentence, if the database or the store cannot be used: before a flow
    loads Prefect and TensorFlow, which takes seconds."""
    from flows.common import opened_workspace

    with opened_workspace():
        pass


def print_document(document: Document, *, to_errors: bool = False) -> None:
    """Print a report as text, exactly as written (no markup, no highlighting)."""
    from mlc_core.reports.document import to_text

    (errors if to_errors else console).print(
        escape(to_text(document)), highlight=False, soft_wrap=True
    )


class _ExpectedErrorFilter(logging.Filter):
    """Keeps Prefect from printing a traceback for errors that already say what to do."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], MlcError):
            record.exc_info = None
            record.exc_text = None
        return True


def run_flow(entrypoint: str, **parameters: Any) -> Any:
    """Run the flow at ``entrypoint`` (``module.name``) in this process and return its result.

    Its run is recorded by the Prefect server in ``PREFECT_API_URL`` when one is configured;
    else by the server kept for ``MLC_HOME`` (:mod:`flows.kept_server`), started now if need
    be while the flow's modules load; else, with ``MLC_ORCHESTRATION__KEEP_PREFECT_SERVER``
    off, by the temporary server of Prefect's ephemeral mode.
    """
    from flows import kept_server
    from flows.common import load_flow

    chosen = settings()
    server = None
    if chosen.orchestration.keep_prefect_server and not kept_server.prefect_api_configured():
        server, started = kept_server.start_or_reuse(chosen.home)
        if started:
            errors.print(
                f"starting a Prefect server for mlc's runs at {server.ui_url} (kept for the "
                "next commands; `mlc server stop` stops it)",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    flow = load_flow(entrypoint)
    if server is not None:
        kept_server.wait_until_healthy(chosen.home, server)
        kept_server.point_prefect_at(server)
    for name in ("prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        logging.getLogger(name).addFilter(_ExpectedErrorFilter())
    return flow(**parameters)


@contextmanager
def progress_bar(label: str, describe: Callable[[str, Any], str]) -> Iterator[None]:
    """Show a transient progress bar that follows the progress events of flows run inside.

    The bar starts as ``label`` with no total. Each event a flow reports through
    ``flows.progress`` moves it: an ``epoch`` event to its epoch of its epochs, any other
    event to its ``done`` of its ``total``; ``describe(kind, event)`` is the new label.
    """
    from flows.progress import progress_sink

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)

        def on_event(kind: str, event: Any) -> None:
            if kind == "epoch":
                total, completed = event.epochs, event.epoch
            else:
                total, completed = event.total, event.done
            progress.update(
                task, total=total, completed=completed, description=describe(kind, event)
            )

        with progress_sink(on_event):
            yield


def main() -> None:
    """Entry point of the ``mlc`` console script."""
    # The modules imported so far live as long as the process: out of the collector's way, its
    # passes over what a command imports next (Prefect, a flow) cost a quarter less CPU.
    gc.freeze()
    # Set before TensorFlow or Prefect are imported by a command: they read these once.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "mlc_core")
    # Prefect's ephemeral server migrates a new database on first start, which takes longer
    # than its 20 s default on a busy two-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    try:
        app()
    except MlcError as error:
        errors.print(f"[red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        errors.print("interrupted; committed batches are kept and a rerun continues")
        sys.exit(130)
    finally:
        # Spares the exit a last pass over every object (half a second of CPU after Prefect's
        # imports); files and logs are flushed and closed by their owners and logging's own
        # exit hook, not by the collector.
        gc.freeze()
