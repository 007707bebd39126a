"""The commands people query tags with: ``tags``, ``show``, ``review``, ``export``.

Each asks ``mlc_core`` the same question the views answer (see ``mlc_core.db.tag_search``) and
prints a report from ``mlc_core.reports.tags``; images are named by their store key.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from flows.cli.app import app, console, print_document
from flows.common import opened_workspace
from mlc_core.errors import MlcError

if TYPE_CHECKING:
    from mlc_core.db.tag_search import FoundImage, TagQuery
    from mlc_core.jobs.workspace import Workspace


def key_function(workspace: Workspace) -> Callable[[str], str]:
    """Names an image by its key in the workspace's store (its URI if it lies outside)."""
    from mlc_core.storage import key_for_uri

    return lambda uri: key_for_uri(workspace.store, uri) or uri


def normalized(tags: list[str] | None) -> tuple[str, ...]:
    from mlc_core.labels import normalize_tag

    try:
        return tuple(dict.fromkeys(normalize_tag(tag) for tag in tags or []))
    except ValueError as error:
        raise MlcError(str(error)) from None


@app.command()
def tags(
    all_tags: Annotated[
        list[str] | None,
        typer.Option(
            "--all", "--tag", metavar="TAG", help="the image carries this tag (repeatable; AND)"
        ),
    ] = None,
    any_tags: Annotated[
        list[str] | None,
        typer.Option("--any", metavar="TAG", help="the image carries one of these (repeatable)"),
    ] = None,
    none_tags: Annotated[
        list[str] | None,
        typer.Option("--none", metavar="TAG", help="the image carries none of these (repeatable)"),
    ] = None,
    min_prob: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="least probability of each --all tag"),
    ] = None,
    band: Annotated[
        tuple[str, float, float] | None,
        typer.Option(metavar="TAG LOW HIGH", help="the tag's probability lies in [LOW, HIGH]"),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="what this version said (no labels applied)")
    ] = None,
    prefix: Annotated[str, typer.Option(help="only keys starting with this")] = "",
    after: Annotated[str | None, typer.Option(help="the page after this key")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    output_format: Annotated[
        Literal["table", "csv", "jsonl"], typer.Option("--format", help="table, csv or jsonl")
    ] = "table",
    as_json: Annotated[bool, typer.Option("--json", hidden=True)] = False,
) -> None:
    """List images by their current tags: a person's labels win over the model's tags."""
    from mlc_core.db.tag_search import search_tags
    from mlc_core.jobs.browse import gallery_query

    if min_prob is not None and not all_tags:
        raise MlcError("--min-prob applies to the --all tags; name at least one with --all")
    with opened_workspace() as workspace, workspace.transaction() as session:
        # The same query the web page builds from its form, with the same checks.
        query, version_id = gallery_query(
            session,
            workspace.store,
            all_tags=all_tags or [],
            any_tags=any_tags or [],
            none_tags=none_tags or [],
            min_probability=min_prob,
            band=(band[0], float(band[1]), float(band[2])) if band else None,
            model=model,
            prefix=prefix,
            after=after,
            limit=limit,
        )
        found = search_tags(session, query, model_version_id=version_id)
        key_of = key_function(workspace)
    _print_found(query, found, key_of, "jsonl" if as_json else output_format)


def _print_found(
    query: TagQuery, found: list[FoundImage], key_of: Callable[[str], str], output_format: str
) -> None:
    from mlc_core.reports.tags import (
        FOUND_IMAGE_CSV_HEADER,
        found_image_csv_rows,
        found_image_record,
        found_images_table,
    )

    if output_format == "jsonl":
        for image in found:
            print(json.dumps(found_image_record(image, key_of)))
        return
    if output_format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(FOUND_IMAGE_CSV_HEADER)
        for image in found:
            writer.writerows(found_image_csv_rows(image, key_of))
        return
    print_document(found_images_table(describe_query(query), found, key_of))
    if len(found) == query.limit:
        console.print(f"more: --after {key_of(found[-1].uri)}", highlight=False)


def describe_query(query: TagQuery) -> str:
    parts = []
    if query.all_tags:
        parts.append("with " + " and ".join(query.all_tags))
        if query.min_probability is not None:
            parts[-1] += f" (p >= {query.min_probability:g})"
    if query.any_tags:
        parts.append("with any of " + ", ".join(query.any_tags))
    if query.none_tags:
        parts.append("without " + ", ".join(query.none_tags))
    if query.band:
        parts.append(f"{query.band.tag} between {query.band.low:g} and {query.band.high:g}")
    where = f"as {query.model_version} tags them" if query.model_version else "current tags"
    return f"images {' '.join(parts) or 'with any tags'} ({where})"


@app.command()
def show(
    key: Annotated[str, typer.Argument(help="the image's key in the store, e.g. images/a.jpg")],
    output_format: Annotated[
        Literal["table", "json"], typer.Option("--format", help="table or json")
    ] = "table",
) -> None:
    """Everything mlc knows about one image: probabilities, thresholds, tags, labels, failure."""
    from dataclasses import asdict

    from mlc_core.db.image_detail import describe_image
    from mlc_core.jobs.corrections import registered_uri
    from mlc_core.reports.tags import image_detail_document

    with opened_workspace() as workspace, workspace.transaction() as session:
        detail = describe_image(session, registered_uri(session, workspace.store, key))
    assert detail is not None  # registered_uri found it
    if output_format == "json":
        print(json.dumps({"key": key, **asdict(detail)}, default=str))
        return
    print_document(image_detail_document(detail, key))


@app.command()
def review(
    n: Annotated[int, typer.Option("--n", min=1, max=10_000, help="how many images")] = 50,
    tag: Annotated[str | None, typer.Option(help="nearest this class's threshold")] = None,
    prefix: Annotated[str, typer.Option(help="only keys starting with this")] = "",
    output_format: Annotated[
        Literal["table", "csv"],
        typer.Option("--format", help="table, or a corrections CSV for `mlc labels import`"),
    ] = "table",
) -> None:
    """The images most worth a person's label: probabilities nearest their thresholds."""
    from mlc_core.db.review import review_list
    from mlc_core.db.tag_search import require_known_tags
    from mlc_core.reports.tags import REVIEW_CSV_HEADER, review_csv_row, review_table

    wanted = normalized([tag])[0] if tag else None
    with opened_workspace() as workspace, workspace.transaction() as session:
        if wanted:
            require_known_tags(session, [wanted])
        prefix_uri = workspace.store.root_uri + prefix if prefix else ""
        items = review_list(session, n=n, tag=wanted, uri_prefix=prefix_uri)
        key_of = key_function(workspace)
    if output_format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(REVIEW_CSV_HEADER)
        writer.writerows(review_csv_row(item, key_of) for item in items)
        return
    print_document(review_table(items, key_of))


@app.command()
def export(
    output_format: Annotated[
        Literal["parquet", "csv", "jsonl"], typer.Option("--format", help="parquet, csv or jsonl")
    ] = "csv",
    output: Annotated[
        Path | None, typer.Option(help="file to write (default: standard output)")
    ] = None,
) -> None:
    """Export every image's current tags and scores, streamed (memory stays flat)."""
    from mlc_core.jobs.export import export_tags

    with opened_workspace() as workspace:
        report = export_tags(workspace, output_format, output, stdout=sys.stdout)
    if report.path is not None:
        console.print(f"exported {report.rows} images to {report.path}", highlight=False)
