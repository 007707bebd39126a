"""Export the current tags and scores of every image people see: parquet, CSV or JSON lines.

One row per image: its key and URI, the model version whose scores it shows and when that
version scored it, its current tags (a person's labels applied, as in the views), the tags a
person added, and one probability per class. Rows are read and written in pages of
``PAGE_SIZE`` images, so memory stays flat whatever the row count. A file is written beside
its final path and renamed into place at the end, so a failed export leaves nothing
half-written behind.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlc_core.db.images import current_image
from mlc_core.db.models import Image, Label, ModelVersion
from mlc_core.db.tag_search import tags_of_images
from mlc_core.db.views import shown_scores
from mlc_core.errors import MlcError
from mlc_core.jobs.workspace import Workspace
from mlc_core.storage import key_for_uri

ExportFormat = Literal["parquet", "csv", "jsonl"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("parquet", "csv", "jsonl")
PAGE_SIZE = 5000


@dataclass(frozen=True)
class ExportRow:
    key: str
    uri: str
    model_version: str | None
    scored_at: datetime | None
    tags: tuple[str, ...]
    human_tags: tuple[str, ...]
    probabilities: dict[str, float]


@dataclass(frozen=True)
class ExportReport:
    rows: int
    path: str | None
    format: str


def export_tags(
    workspace: Workspace, export_format: ExportFormat, output: Path | None, *, stdout: IO[str]
) -> ExportReport:
    """Write every seen image's current tags and scores to ``output`` (``stdout`` if None).

    Raises:
        MlcError: the format is unknown, the output cannot be written, or parquet goes to a
            terminal.
    """
    if export_format not in EXPORT_FORMATS:
        raise MlcError(f"unknown export format {export_format!r}; expected one of {EXPORT_FORMATS}")
    if output is None and export_format == "parquet":
        raise MlcError("parquet is a binary format; give --output FILE to write it")
    if output is not None:
        _check_writable(output)
    with workspace.transaction() as session:
        classes = shown_classes(session)
        pages = _pages(session, workspace, classes)
        if output is None:
            rows = _write_text(export_format, pages, classes, stdout)
            return ExportReport(rows, None, export_format)
        with _replaced_atomically(output) as temporary:
            rows = _write_file(export_format, pages, classes, temporary)
    return ExportReport(rows, str(output), export_format)


def _check_writable(output: Path) -> None:
    folder = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise MlcError(f"cannot export to {output}: it is a folder; name a file in it")
    if not folder.is_dir():
        raise MlcError(f"cannot export to {output}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise MlcError(f"cannot export to {output}: the folder {folder} is not writable")
    if output.exists() and not os.access(output, os.W_OK):
        raise MlcError(f"cannot export to {output}: the file exists and is not writable")


@contextmanager
def _replaced_atomically(output: Path) -> Iterator[Path]:
    """A temporary path beside ``output`` that becomes ``output`` if the block succeeds."""
    descriptor, name = tempfile.mkstemp(
        prefix=f".{output.name}.", suffix=".partial", dir=output.parent or "."
    )
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, output)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise MlcError(f"cannot export to {output}: {error.strerror or error}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def shown_classes(session: Session) -> list[str]:
    """The classes of every version whose scores may be shown, the champion's first."""
    classes: list[str] = []
    for version_classes in session.scalars(
        select(ModelVersion.classes)
        .where(ModelVersion.promoted_at.is_not(None))
        .order_by((ModelVersion.status == "champion").desc(), ModelVersion.promoted_at.desc())
    ):
        classes.extend(name for name in version_classes if name not in classes)
    return classes


def _pages(
    session: Session, workspace: Workspace, classes: Sequence[str]
) -> Iterator[list[ExportRow]]:
    """Every current image with a shown score or a person's label, a page at a time."""
    versions = {v.id: v for v in session.scalars(select(ModelVersion))}
    after = 0
    while True:
        page = session.execute(
            select(
                Image.id,
                Image.uri,
                shown_scores.c.model_version_id,
                shown_scores.c.probabilities,
                shown_scores.c.scored_at,
            )
            .outerjoin(shown_scores, shown_scores.c.image_id == Image.id)
            .where(Image.id > after, current_image())
            .where(
                (shown_scores.c.image_id.is_not(None))
                | Image.uri.in_(select(Label.image_uri).where(Label.positive))
            )
            .order_by(Image.id)
            .limit(PAGE_SIZE)
        ).all()
        if not page:
            return
        tags = tags_of_images(session, [row[0] for row in page])
        rows = []
        for _, uri, version_id, probabilities, scored_at in page:
            version = versions.get(version_id) if version_id is not None else None
            image_tags = tags.get(uri, [])
            rows.append(
                ExportRow(
                    key=key_for_uri(workspace.store, uri) or uri,
                    uri=uri,
                    model_version=version.version if version else None,
                    # SQLite hands back the UTC time it stored without its zone.
                    scored_at=(
                        scored_at.replace(tzinfo=UTC)
                        if scored_at is not None and scored_at.tzinfo is None
                        else scored_at
                    ),
                    tags=tuple(sorted(t.tag for t in image_tags)),
                    human_tags=tuple(sorted(t.tag for t in image_tags if t.source == "human")),
                    probabilities=(
                        dict(zip(version.classes, map(float, probabilities), strict=True))
                        if version
                        else {}
                    ),
                )
            )
        yield rows
        after = page[-1][0]


def _text_line_writer(
    export_format: ExportFormat, classes: Sequence[str], out: IO[str]
) -> Callable[[ExportRow], object]:
    if export_format == "jsonl":
        return lambda row: out.write(json.dumps(_json_of(row)) + "\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["key", "uri", "model_version", "scored_at", "tags", "human_tags"]
        + [f"p_{name}" for name in classes]
    )
    return lambda row: writer.writerow(_csv_of(row, classes))


def _write_text(
    export_format: ExportFormat,
    pages: Iterator[list[ExportRow]],
    classes: Sequence[str],
    out: IO[str],
) -> int:
    write = _text_line_writer(export_format, classes, out)
    count = 0
    for page in pages:
        for row in page:
            write(row)
        count += len(page)
    out.flush()
    return count


def _write_file(
    export_format: ExportFormat,
    pages: Iterator[list[ExportRow]],
    classes: Sequence[str],
    path: Path,
) -> int:
    if export_format == "parquet":
        return _write_parquet(pages, classes, path)
    with path.open("w", encoding="utf-8", newline="") as out:
        return _write_text(export_format, pages, classes, out)


def _json_of(row: ExportRow) -> dict[str, Any]:
    return {
        "key": row.key,
        "uri": row.uri,
        "model_version": row.model_version,
        "scored_at": row.scored_at.isoformat() if row.scored_at else None,
        "tags": list(row.tags),
        "human_tags": list(row.human_tags),
        "probabilities": row.probabilities,
    }


def _csv_of(row: ExportRow, classes: Sequence[str]) -> list[Any]:
    return [
        row.key,
        row.uri,
        row.model_version or "",
        row.scored_at.isoformat() if row.scored_at else "",
        "|".join(row.tags),
        "|".join(row.human_tags),
        *(_csv_number(row.probabilities.get(name)) for name in classes),
    ]


def _csv_number(value: float | None) -> str:
    return "" if value is None else repr(value)


def _write_parquet(pages: Iterator[list[ExportRow]], classes: Sequence[str], path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("key", pa.string()),
            ("uri", pa.string()),
            ("model_version", pa.string()),
            ("scored_at", pa.timestamp("us", tz="UTC")),
            ("tags", pa.list_(pa.string())),
            ("human_tags", pa.list_(pa.string())),
            *((f"p_{name}", pa.float64()) for name in classes),
        ]
    )
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        for page in pages:
            columns: dict[str, list[Any]] = {
                "key": [r.key for r in page],
                "uri": [r.uri for r in page],
                "model_version": [r.model_version for r in page],
                "scored_at": [r.scored_at for r in page],
                "tags": [list(r.tags) for r in page],
                "human_tags": [list(r.human_tags) for r in page],
            }
            for name in classes:
                columns[f"p_{name}"] = [r.probabilities.get(name) for r in page]
            writer.write_table(pa.Table.from_pydict(columns, schema=schema))
            count += len(page)
    return count
