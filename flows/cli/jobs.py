"""The commands that do work: each runs its Prefect flow in this process and prints its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.app import (
    app,
    check_workspace,
    console,
    errors,
    labels_app,
    print_document,
    progress_bar,
    run_flow,
    settings,
)
from flows.common import opened_workspace
from mlc_core.db.pending import ScoreMode
from mlc_core.errors import MlcError


@labels_app.command("import")
def labels_import(
    file: Annotated[Path, typer.Argument(help="CSV with columns key,tags (tags joined by |)")],
    key_prefix: Annotated[
        str, typer.Option(help="prepended to each key, e.g. images/ for bare file names")
    ] = "",
) -> None:
    """Import ground-truth labels; bad rows are reported by line and the rest imported."""
    from mlc_core.reports.scoring import labels_import_summary

    if not file.is_file():
        raise MlcError(f"labels file {file} does not exist")
    check_workspace()
    report = run_flow(
        "flows.labels.import_labels_flow", path=str(file.resolve()), key_prefix=key_prefix
    )
    for problem in report.problems:
        errors.print(f"{file.name} {problem}", highlight=False, markup=False)
    print_document(labels_import_summary(report))


@app.command()
def train(
    epochs: Annotated[int | None, typer.Option(min=1, help="maximum epochs")] = None,
    backbone: Annotated[str | None, typer.Option(help="backbone name")] = None,
    image_size: Annotated[int | None, typer.Option(min=32, max=1024)] = None,
) -> None:
    """Train a model version on the labelled images; promote it if it beats the champion."""
    from mlc_core.reports.training import training_summary

    check_workspace()
    with progress_bar("training", _describe_epoch):
        report = run_flow(
            "flows.train.train_flow", epochs=epochs, backbone=backbone, image_size=image_size
        )
    print_document(training_summary(report))


def _describe_epoch(kind: str, event: Any) -> str:
    validation_map = "-" if event.validation_map is None else f"{event.validation_map:.4f}"
    model = f"{event.model}: " if event.model else ""
    return (
        f"{model}epoch {event.epoch}/{event.epochs} loss {event.loss:.4f} val mAP {validation_map}"
    )


@app.command()
def score(
    prefix: Annotated[
        list[str] | None, typer.Option(help="key prefix to score (repeatable); default images/")
    ] = None,
    mode: Annotated[ScoreMode, typer.Option(help="which images to score")] = "new",
    batch_size: Annotated[int | None, typer.Option(min=1, max=4096)] = None,
    force_retire: Annotated[
        bool,
        typer.Option(
            help="retire what a complete listing did not show, even more than "
            "MLC_SCORING__MAX_RETIRE_FRACTION of a prefix"
        ),
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            help="list only the keys after this one, e.g. images/2026-06-01/ where new images "
            "land under dated prefixes; such a partial listing retires nothing"
        ),
    ] = None,
) -> None:
    """Score images in the store with the champion model and write probabilities and tags."""
    from mlc_core.db.model_versions import require_champion
    from mlc_core.storage import validate_prefix

    for one_prefix in [*(prefix or []), *([since] if since else [])]:
        validate_prefix(one_prefix)
    with opened_workspace() as workspace, workspace.transaction() as session:
        require_champion(session)
    run_scoring(
        prefixes=prefix,
        mode=mode,
        batch_size=batch_size,
        force_retire=force_retire,
        since=since,
    )


def run_scoring(**parameters: Any) -> None:
    """Run the score flow with ``parameters`` behind a progress bar and print its summary."""
    from mlc_core.reports.scoring import score_summary

    with progress_bar("scoring", _describe_scoring):
        report = run_flow("flows.score.score_flow", **parameters)
    print_document(score_summary(report))


def _describe_scoring(kind: str, event: Any) -> str:
    return f"scoring ({event.failed} failed, {event.images_per_second:.1f} img/s)"


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
    from mlc_core.db.model_versions import require_champion, require_model_version
    from mlc_core.reports.scoring import retag_summary

    with opened_workspace() as workspace, workspace.transaction() as session:
        if version is None:
            require_champion(session)
        else:
            require_model_version(session, version)
    with progress_bar("re-tagging", lambda kind, event: f"re-tagging ({event.changed} changed)"):
        report = run_flow("flows.retag.retag_flow", version=version, batch_size=batch_size)
    print_document(retag_summary(report))


@app.command()
def demo(
    images: Annotated[int, typer.Option(min=40, max=20000)] = 600,
    epochs: Annotated[int, typer.Option(min=1, help="the most epochs to train")] = 80,
    minutes: Annotated[
        float, typer.Option(min=0.5, max=600, help="time for the whole demo, training included")
    ] = 3.0,
) -> None:
    """Run the main job end to end on a synthetic data set, then show the results."""
    from mlc_core.db.engine import display_url
    from mlc_core.reports.catalog import holdout_summary
    from mlc_core.reports.scoring import score_summary
    from mlc_core.reports.training import training_summary

    chosen = settings()
    with opened_workspace() as workspace:
        database = display_url(workspace.engine)
    console.print(
        f"mlc demo: database {database}, store {chosen.resolved_storage_url}",
        highlight=False,
        markup=False,
    )
    with progress_bar("demo", _describe_demo):
        outcome = run_flow("flows.demo.demo_flow", images=images, epochs=epochs, minutes=minutes)
    for document in (
        training_summary(outcome.training),
        score_summary(outcome.scoring),
        holdout_summary(outcome.holdout),
    ):
        print_document(document)
        console.print()
    examples = outcome.holdout.examples
    first = sorted(examples[0].true_tags)[0] if examples else "circle"
    key = examples[0].key if examples else f"{outcome.prefix}synthetic-00000.jpg"
    console.print(
        "\nNext, try:\n"
        f"  mlc tags --tag {first}    images carrying a tag\n"
        f"  mlc show {key}    one image: its tags, probabilities and labels\n"
        "  mlc review    images the model is least sure of, to correct with mlc labels set\n"
        f"  mlc ui    the same in a browser, at http://{chosen.ui.host}:{chosen.ui.port}/\n"
        "  mlc models    model versions and their metrics",
        highlight=False,
        markup=False,
        # A command to copy must stay on one line, however narrow the terminal.
        soft_wrap=True,
    )


def _describe_demo(kind: str, event: Any) -> str:
    if kind == "epoch":
        validation_map = "-" if event.validation_map is None else f"{event.validation_map:.3f}"
        model = f" {event.model}," if event.model else ""
        return f"training:{model} epoch {event.epoch}, val mAP {validation_map}"
    return "scoring"


@app.command()
def serve(
    limit: Annotated[int | None, typer.Option(min=1, help="most flow runs at once")] = None,
) -> None:
    """Register the scheduled deployments with the Prefect API and run them until stopped."""
    # The API check imports no flow module, so a down server is reported before TensorFlow
    # loads; the database and store are checked next, as every other command does.
    from flows.deployments import check_prefect_api, serve_deployments

    url = check_prefect_api()
    chosen = settings()
    check_workspace()
    orchestration = chosen.orchestration
    console.print(
        f"serving the mlc deployments on {url} (nightly {orchestration.nightly_cron or 'off'}, "
        f"retrain {orchestration.retrain_cron or 'off'}, score {orchestration.score_cron or 'off'}"
        f", {orchestration.timezone})",
        highlight=False,
    )
    serve_deployments(chosen, limit=limit)
