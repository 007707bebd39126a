"""The ``mlc`` command.

It lives beside the flows because it is an entry point that wires settings to flows: the
commands that do work (``demo``, ``labels import``, ``train``, ``score``) run the Prefect flows,
so a run started from a terminal shows up in the Prefect UI like a scheduled one; commands that
only read or change a row call ``mlc_core`` directly. Expected problems print one sentence and
exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

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
from rich.table import Table

from mlc_core.errors import MlcError

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


def _settings() -> Any:
    from mlc_core.settings import load_settings

    return load_settings()


def _workspace() -> Any:
    from mlc_core.jobs.workspace import open_workspace

    return open_workspace(_settings())


class _ExpectedErrorFilter(logging.Filter):
    """Keeps Prefect from printing a traceback for errors that already say what to do."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], MlcError):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_expected_errors() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        logging.getLogger(name).addFilter(_ExpectedErrorFilter())


def _run_flow(flow: Any, **parameters: Any) -> Any:
    """Run a flow in this process (Prefect's ephemeral mode unless PREFECT_API_URL is set)."""
    _quiet_expected_errors()
    return flow(**parameters)


@contextmanager
def _progress_bar(label: str, describe: Callable[[str, Any], str]) -> Iterator[None]:
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


def _model_version(session: Any, version: str) -> Any:
    """Return the row of model ``version``, or fail with a sentence naming it."""
    from mlc_core.db.model_versions import get_model_version

    record = get_model_version(session, version)
    if record is None:
        raise MlcError(f"there is no model version {version!r}; `mlc models` lists them")
    return record


# --- db -----------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to this version of mlc."""
    from mlc_core.db.engine import check_connection, create_db_engine
    from mlc_core.db.migrate import upgrade_schema

    settings = _settings()
    engine = create_db_engine(settings.resolved_database_url)
    try:
        check_connection(engine)
        revision = upgrade_schema(engine)
    finally:
        engine.dispose()
    console.print(f"database schema is at revision {revision}")


# --- labels -------------------------------------------------------------------------------


@labels_app.command("import")
def labels_import(
    file: Annotated[Path, typer.Argument(help="CSV with columns key,tags (tags joined by |)")],
    key_prefix: Annotated[
        str, typer.Option(help="prepended to each key, e.g. images/ for bare file names")
    ] = "",
) -> None:
    """Import ground-truth labels; bad rows are reported by line and the rest imported."""
    from flows.labels import import_labels_flow

    if not file.is_file():
        raise MlcError(f"labels file {file} does not exist")
    _workspace().close()
    result = _run_flow(import_labels_flow, path=str(file.resolve()), key_prefix=key_prefix)
    for problem in result["problems"]:
        errors.print(f"[yellow]{escape(file.name)}[/] {escape(str(problem))}", highlight=False)
    console.print(
        f"imported labels for {result['imported_images']} images "
        f"({result['positive_labels']} positive, {result['negative_labels']} negative) "
        f"from {result['rows']} rows"
    )
    for kind, count in sorted(result["problem_counts"].items()):
        console.print(f"  {count} row(s) with problem '{kind}'")


# --- train --------------------------------------------------------------------------------


@app.command()
def train(
    epochs: Annotated[int | None, typer.Option(min=1, help="maximum epochs")] = None,
    backbone: Annotated[str | None, typer.Option(help="backbone name")] = None,
    image_size: Annotated[int | None, typer.Option(min=32, max=1024)] = None,
) -> None:
    """Train a model version on the labelled images; promote it if it beats the champion."""
    from flows.train import train_flow

    _workspace().close()
    with _progress_bar("training", _describe_training):
        report = _run_flow(train_flow, epochs=epochs, backbone=backbone, image_size=image_size)
    _print_training(report)


def _describe_training(kind: str, event: Any) -> str:
    return (
        f"epoch {event.epoch}/{event.epochs} loss {event.loss:.4f} "
        f"val mAP {event.validation_map:.4f}"
    )


def _print_training(report: dict[str, Any]) -> None:
    metrics = report["metrics"]
    console.print(
        f"model [bold]{report['version']}[/] is [bold]{report['status']}[/]: {report['decision']}"
    )
    if report["left_out_classes"]:
        console.print(f"left out (too few positives): {report['left_out_classes']}")
    if report["unreadable_images"]:
        console.print(f"skipped {len(report['unreadable_images'])} unreadable labelled images")
    table = Table(title=f"test split ({report['split_sizes']['test']} images)")
    table.add_column("class")
    table.add_column("AP", justify="right")
    table.add_column("threshold", justify="right")
    for name, threshold in zip(report["classes"], report["thresholds"], strict=True):
        ap = metrics["average_precision"].get(name)
        table.add_row(name, "-" if ap is None else f"{ap:.3f}", f"{threshold:.3f}")
    console.print(table)
    console.print(
        "mAP {m:.3f}  micro-F1 {mi:.3f}  macro-F1 {ma:.3f}  hamming {h:.3f}  exact {s:.3f}".format(
            m=metrics["mean_average_precision"] or 0,
            mi=metrics["micro_f1"],
            ma=metrics["macro_f1"],
            h=metrics["hamming_loss"],
            s=metrics["subset_accuracy"],
        )
    )


# --- score --------------------------------------------------------------------------------


@app.command()
def score(
    prefix: Annotated[
        list[str] | None, typer.Option(help="key prefix to score (repeatable); default images/")
    ] = None,
    mode: Annotated[str, typer.Option(help="new | stale | all | failed")] = "new",
    batch_size: Annotated[int | None, typer.Option(min=1, max=4096)] = None,
) -> None:
    """Score images in the store with the champion model and write probabilities and tags."""
    from mlc_core.db.model_versions import get_champion
    from mlc_core.db.work import SCORE_MODES
    from mlc_core.errors import NoChampionModel
    from mlc_core.storage import validate_prefix

    if mode not in SCORE_MODES:
        raise MlcError(f"unknown mode {mode!r}; expected one of {', '.join(SCORE_MODES)}")
    for one_prefix in prefix or []:
        validate_prefix(one_prefix)
    workspace = _workspace()
    try:
        with workspace.transaction() as session:
            if get_champion(session) is None:
                raise NoChampionModel()
    finally:
        workspace.close()
    # Imported once the cheap checks passed: it loads TensorFlow and Prefect, which takes
    # seconds a user waiting for "train first" should not spend.
    from flows.score import score_flow

    with _progress_bar("scoring", _describe_scoring):
        report = _run_flow(score_flow, prefixes=prefix, mode=mode, batch_size=batch_size)
    _print_scoring(report)


def _describe_scoring(kind: str, event: Any) -> str:
    return f"scoring ({event.failed} failed, {event.images_per_second:.1f} img/s)"


def _print_scoring(report: dict[str, Any]) -> None:
    console.print(
        f"listed {report['listed']} objects, {report['new']} new images; scored "
        f"{report['scored']}, failed {report['failed']} with model {report['model_version']} "
        f"({report['images_per_second']:.1f} images/s)"
    )
    for reason, count in sorted(report["failed_by_reason"].items()):
        console.print(f"  failed: {count} x {reason}")
    for reason, count in sorted(report["skipped"].items()):
        console.print(f"  skipped: {count} x {reason}")
    for warning in report.get("warnings", []):
        errors.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if report.get("dead_runs_ended"):
        console.print(
            f"  took over the images of runs {report['dead_runs_ended']}, which stopped "
            "without finishing"
        )


@app.command()
def retag(
    version: Annotated[
        str | None, typer.Option(help="model version, e.g. v3; default the champion")
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=100_000, help="score rows per database transaction")
    ] = 1000,
) -> None:
    """Recompute stored tag sets from stored probabilities with the current thresholds."""
    from flows.retag import retag_flow
    from mlc_core.db.model_versions import get_champion
    from mlc_core.errors import NoChampionModel

    workspace = _workspace()
    try:
        with workspace.transaction() as session:
            if version is None and get_champion(session) is None:
                raise NoChampionModel()
            if version is not None:
                _model_version(session, version)
    finally:
        workspace.close()
    with _progress_bar("re-tagging", _describe_retagging):
        report = _run_flow(retag_flow, version=version, batch_size=batch_size)
    console.print(
        f"{report['model_version']}: tags changed on {report['changed']} of {report['images']} "
        f"images ({report['tags_added']} added, {report['tags_removed']} removed) "
        f"with thresholds {', '.join(f'{t:.3f}' for t in report['thresholds'])}"
    )


def _describe_retagging(kind: str, event: Any) -> str:
    return f"re-tagging ({event.changed} changed)"


# --- tags, models, promote ----------------------------------------------------------------


@app.command()
def tags(
    tag: Annotated[list[str], typer.Option(help="a tag the images must carry (repeatable)")],
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
) -> None:
    """List images that carry all the given tags under the champion model."""
    from mlc_core.db.queries import find_images_with_tags
    from mlc_core.labels import normalize_tag

    try:
        wanted = [normalize_tag(t) for t in tag]
    except ValueError as error:
        raise MlcError(str(error)) from None
    workspace = _workspace()
    try:
        with workspace.transaction() as session:
            found = find_images_with_tags(session, wanted, limit=limit)
    finally:
        workspace.close()
    if as_json:
        for image in found:
            print(
                json.dumps(
                    {"uri": image.uri, "tags": image.tags, "model_version": image.model_version}
                )
            )
        return
    table = Table(title=f"images tagged {' + '.join(wanted)} ({len(found)} shown)")
    table.add_column("image")
    table.add_column("tags (probability)")
    table.add_column("model")
    for image in found:
        table.add_row(
            escape(image.uri),
            ", ".join(
                f"{name} {p:.2f}" for name, p in sorted(image.tags.items(), key=lambda x: -x[1])
            ),
            image.model_version,
        )
    console.print(table)


@app.command()
def models() -> None:
    """List model versions with their test metrics and status."""
    from mlc_core.db.model_versions import list_model_versions

    workspace = _workspace()
    try:
        with workspace.transaction() as session:
            versions = list_model_versions(session)
            table = Table(title="model versions")
            for column in (
                "version",
                "status",
                "created",
                "backbone",
                "classes",
                "test mAP",
                "decision",
            ):
                table.add_column(column)
            for version in versions:
                mean_ap = version.metrics.get("mean_average_precision")
                table.add_row(
                    version.version,
                    version.status,
                    version.created_at.strftime("%Y-%m-%d %H:%M"),
                    f"{version.backbone} {version.image_size}px",
                    ", ".join(version.classes),
                    "-" if mean_ap is None else f"{mean_ap:.3f}",
                    version.decision or "",
                )
    finally:
        workspace.close()
    console.print(table)


@app.command()
def promote(version: Annotated[str, typer.Argument(help="the version to make champion")]) -> None:
    """Make VERSION the champion (also the way to roll back)."""
    from mlc_core.db.model_versions import promote_model_version

    workspace = _workspace()
    try:
        with workspace.transaction() as session:
            record = _model_version(session, version)
            promote_model_version(session, record, "promoted by hand with `mlc promote`")
    finally:
        workspace.close()
    console.print(f"{version} is now the champion; `mlc score --mode stale` rescores older rows")


@app.command()
def thresholds(
    version: Annotated[str, typer.Argument(help="model version, e.g. v3")],
    class_name: Annotated[str | None, typer.Argument(help="class to change")] = None,
    value: Annotated[float | None, typer.Argument(min=0.0, max=1.0, help="new threshold")] = None,
) -> None:
    """Show a version's per-class thresholds, or override one class's threshold."""
    from mlc_core.db.model_versions import override_threshold

    if (class_name is None) != (value is None):
        raise MlcError("give both CLASS and VALUE to override a threshold, or neither to show them")
    workspace = _workspace()
    try:
        with workspace.transaction() as session:
            record = _model_version(session, version)
            if class_name is not None and value is not None:
                try:
                    previous = override_threshold(session, record, class_name, value)
                except ValueError as error:
                    raise MlcError(str(error)) from None
                console.print(
                    f"{version} {class_name}: threshold {previous:.3f} -> {value:.3f}; "
                    "run `mlc retag` to recompute stored tag sets"
                )
            table = Table(title=f"thresholds of {version}")
            for column in ("class", "threshold", "override"):
                table.add_column(column)
            overrides = record.threshold_overrides or {}
            for name, threshold in zip(record.classes, record.thresholds, strict=True):
                note = overrides.get(name)
                table.add_row(
                    name,
                    f"{threshold:.3f}",
                    f"set {note['set_at'][:16]} (calibrated {note['calibrated']:.3f})"
                    if note
                    else "",
                )
    finally:
        workspace.close()
    console.print(table)


# --- demo ---------------------------------------------------------------------------------


@app.command()
def demo(
    images: Annotated[int, typer.Option(min=40, max=20000)] = 320,
    epochs: Annotated[int, typer.Option(min=1)] = 15,
) -> None:
    """Run the main job end to end on a synthetic data set, then show the results."""
    from flows.demo import demo_flow

    settings = _settings()
    _workspace().close()
    console.print(
        f"[bold]mlc demo[/]: database {settings.resolved_database_url}, "
        f"store {settings.resolved_storage_url}"
    )
    with _progress_bar("demo", _describe_demo):
        result = _run_flow(demo_flow, images=images, epochs=epochs)
    _print_training(result["training"])
    _print_scoring(result["scoring"])
    holdout = result["holdout"]
    table = Table(
        title=(
            f"hold-out: {holdout['images']} images never labelled, model {holdout['model_version']}"
        )
    )
    table.add_column("class")
    table.add_column("average precision", justify="right")
    for name, ap in holdout["metrics"]["average_precision"].items():
        table.add_row(name, "-" if ap is None else f"{ap:.3f}")
    console.print(table)
    console.print(f"hold-out mAP: {holdout['metrics']['mean_average_precision']:.3f}")
    for example in holdout["examples"]:
        probabilities = ", ".join(f"{k} {v:.2f}" for k, v in example["probabilities"].items())
        console.print(
            f"  {example['key']}: tags {sorted(example['tags'])} (truth {example['true_tags']}); "
            f"{probabilities}",
            highlight=False,
        )
    first = sorted(holdout["examples"][0]["true_tags"])[0] if holdout["examples"] else "circle"
    console.print(
        "\nNext, try:\n"
        f"  mlc tags --tag {first}        images carrying a tag\n"
        "  mlc models                 model versions and their metrics\n"
        "  mlc score                  score new images under images/ (nothing new: no work)\n"
        f"  sqlite3 {settings.home / 'mlc.db'} 'select * from current_tags limit 5'",
        highlight=False,
    )


def _describe_demo(kind: str, event: Any) -> str:
    if kind == "epoch":
        return f"training: epoch {event.epoch}, val mAP {event.validation_map:.3f}"
    return "scoring"


def main() -> None:
    """Entry point of the ``mlc`` console script."""
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
        errors.print(f"[red]error:[/] {escape(str(error))}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        errors.print("interrupted; committed batches are kept and a rerun continues")
        sys.exit(130)


# --- serve --------------------------------------------------------------------------------


@app.command()
def serve(
    limit: Annotated[int | None, typer.Option(min=1, help="most flow runs at once")] = None,
) -> None:
    """Register the scheduled deployments with the Prefect API and run them until stopped."""
    # The API check imports no flow module, so a down server is reported before TensorFlow
    # loads; the database and store are checked next, as every other command does.
    from flows.deployments import check_prefect_api, serve_deployments

    url = check_prefect_api()
    settings = _settings()
    _workspace().close()
    orchestration = settings.orchestration
    console.print(
        f"serving the mlc deployments on {url} (nightly {orchestration.nightly_cron or 'off'}, "
        f"retrain {orchestration.retrain_cron or 'off'}, score {orchestration.score_cron or 'off'}"
        f", {orchestration.timezone})",
        highlight=False,
    )
    serve_deployments(settings, limit=limit)
