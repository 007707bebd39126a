"""The commands that read or change a row: the schema, tags, model versions, thresholds."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.app import app, console, db_app, print_document, settings
from flows.common import opened_workspace
from mlc_core.errors import MlcError


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to this version of mlc."""
    from mlc_core.db.engine import check_connection, create_db_engine
    from mlc_core.db.migrate import upgrade_schema

    engine = create_db_engine(settings().resolved_database_url)
    try:
        check_connection(engine)
        revision = upgrade_schema(engine)
    finally:
        engine.dispose()
    console.print(f"database schema is at revision {revision}")


@app.command()
def models() -> None:
    """List model versions with their test metrics and status."""
    from mlc_core.db.model_versions import list_model_versions
    from mlc_core.reports.catalog import model_versions_table

    with opened_workspace() as workspace, workspace.transaction() as session:
        print_document(model_versions_table(list_model_versions(session)))


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="the version to make champion")],
    rescore: Annotated[
        bool, typer.Option(help="score every current image the new champion has not scored")
    ] = True,
) -> None:
    """Make VERSION the champion (also the way to roll back), then score what it has not."""
    from mlc_core.db.model_versions import promote_model_version, require_model_version

    with opened_workspace() as workspace, workspace.transaction() as session:
        record = require_model_version(session, version)
        promote_model_version(session, record, "promoted by hand with `mlc promote`")
    console.print(f"{version} is now the champion")
    if not rescore:
        console.print(
            "not rescored: an image it has not scored shows the tags of an earlier champion "
            "that did, if any"
        )
        return
    # Every registered image, whatever its prefix; the store is not listed again.
    from flows.cli.jobs import run_scoring

    run_scoring(prefixes=[""], mode="new", discover=False)


@app.command()
def thresholds(
    version: Annotated[str, typer.Argument(help="model version, e.g. v3")],
    class_name: Annotated[str | None, typer.Argument(help="class to change")] = None,
    value: Annotated[float | None, typer.Argument(min=0.0, max=1.0, help="new threshold")] = None,
) -> None:
    """Show a version's per-class thresholds, or override one class's threshold."""
    from mlc_core.db.model_versions import override_threshold, require_model_version
    from mlc_core.reports.catalog import thresholds_table

    if (class_name is None) != (value is None):
        raise MlcError("give both CLASS and VALUE to override a threshold, or neither to show them")
    with opened_workspace() as workspace, workspace.transaction() as session:
        record = require_model_version(session, version)
        if class_name is not None and value is not None:
            try:
                previous = override_threshold(session, record, class_name, value)
            except ValueError as error:
                raise MlcError(str(error)) from None
            console.print(
                f"{version} {class_name}: threshold {previous:.3f} -> {value:.3f}; "
                "run `mlc retag` to recompute stored tag sets"
            )
        print_document(thresholds_table(record))
