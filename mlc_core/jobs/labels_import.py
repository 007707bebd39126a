"""Import labels from a CSV file: whole tag sets, or corrections of a few tags.

A file of whole tag sets has a header and the columns ``key,tags`` (``filename`` is accepted
for ``key``), with tags joined by ``|``; an optional ``negative_tags`` column states tags that
are known to be absent. A row states the image's whole label set: a tag that an earlier import
marked present and this row no longer lists becomes a negative label, and every class it does
not name is absent when the next model trains.

A corrections file has the columns ``key,add,remove`` (either of the last two may be missing):
only the named tags change, and the image's other classes stay as they were (unknown to
training unless a whole set was stated before). Other columns are ignored, so the corrections
CSV of ``mlc review`` comes back as it is, once filled in.

Problems are collected per line, never fatal: every valid row is imported and every bad one is
reported with its line number, so one typo does not cost a night's labelling.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from mlc_core.db.labels import LabelRecord, labels_by_image, upsert_labels
from mlc_core.errors import InvalidKey, LabelsFileError
from mlc_core.labels import parse_tags
from mlc_core.storage import ObjectStore, validate_key

logger = logging.getLogger(__name__)

KEY_COLUMNS = ("key", "filename")


@dataclass(frozen=True)
class LabelProblem:
    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class LabelImportReport:
    rows: int = 0
    imported_images: int = 0
    positive_labels: int = 0
    negative_labels: int = 0
    # Corrections rows that name no tag to add or remove (a review list not filled in).
    blank_corrections: int = 0
    problems: list[LabelProblem] = field(default_factory=list)

    @property
    def problem_counts(self) -> dict[str, int]:
        return dict(Counter(problem.kind for problem in self.problems))


@dataclass(frozen=True)
class _Row:
    line: int
    key: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    # The row states the image's whole tag set (a key,tags file), not a correction of a few.
    complete: bool


# csv refuses longer fields with an error that would end the whole import; no key or tag is
# this long, so a longer field is one bad row.
MAX_FIELD_CHARACTERS = 128 * 1024
# Stands in for a carriage return in the middle of a line while csv reads the file: csv would
# end the row there, and a row cut in two would import half its tags. No key or tag may hold
# it, so a field that does is reported.
_STRAY_CARRIAGE_RETURN = "\ue000"


def _text_of(data: bytes) -> str:
    """The file as text, undecodable bytes kept as surrogates, line ends made one kind.

    A file with no line feed but carriage returns (old Mac style) is read line by carriage
    return; in any other file a carriage return that is not part of a CRLF is a stray one.
    """
    text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="surrogateescape")
    if "\n" not in text:
        return text.replace("\r", "\n")
    return re.sub(r"\r(?!\n)", _STRAY_CARRIAGE_RETURN, text)


def _csv_rows(data: bytes) -> Iterator[tuple[int, list[str]]]:
    """``(first line, fields)`` of each CSV row, blank rows left out.

    The csv module splits the rows itself, so a quoted field may span lines, and the line of a
    row is the line it starts on.
    """
    reader = csv.reader(io.StringIO(_text_of(data), newline=""), strict=False)
    previous_limit = csv.field_size_limit(max(len(data), MAX_FIELD_CHARACTERS) + 1)
    try:
        line = 1
        for fields in reader:
            if any(value.strip() for value in fields):
                yield line, fields
            line = reader.line_num + 1
    finally:
        csv.field_size_limit(previous_limit)


def _row_problem(line: int, fields: list[str]) -> LabelProblem | None:
    """What makes a row unreadable before its meaning is looked at, if anything."""
    for value in fields:
        if bad := next((c for c in value if "\udc80" <= c <= "\udcff"), None):
            return LabelProblem(
                line,
                "bad_encoding",
                f"not valid UTF-8 (byte 0x{ord(bad) - 0xDC00:02x}); save the file as UTF-8",
            )
        if _STRAY_CARRIAGE_RETURN in value:
            return LabelProblem(
                line,
                "stray_carriage_return",
                "a carriage return in the middle of the line; a row ends with the line",
            )
        if len(value) > MAX_FIELD_CHARACTERS:
            return LabelProblem(
                line,
                "field_too_long",
                f"a field of {len(value):,} characters; keys and tags are far shorter",
            )
    return None


@dataclass(frozen=True)
class _Columns:
    """Where the labels file keeps each column, from its header.

    A file of whole tag sets has ``tags`` (and optionally ``negative_tags``); a corrections
    file has ``add`` and/or ``remove`` instead, and changes only the tags it names.
    """

    header: list[str]
    key: int
    positives: int | None
    negatives: int | None
    complete: bool

    @classmethod
    def of(cls, header: list[str]) -> _Columns:
        names = [name.strip().lower() for name in header]
        key_column = next((name for name in KEY_COLUMNS if name in names), None)

        def at(name: str) -> int | None:
            return names.index(name) if name in names else None

        if key_column is not None and "tags" in names:
            return cls(names, names.index(key_column), at("tags"), at("negative_tags"), True)
        if key_column is not None and ("add" in names or "remove" in names):
            return cls(names, names.index(key_column), at("add"), at("remove"), False)
        raise LabelsFileError(
            f"the labels file's header is {','.join(names) or '(empty)'}; expected the "
            "columns key,tags (and optionally negative_tags) for whole tag sets, or "
            "key,add,remove for corrections"
        )


def parse_labels_csv(data: bytes, *, key_prefix: str = "") -> tuple[list[_Row], LabelImportReport]:
    """Parse a labels CSV into rows, collecting a problem for each bad line.

    Raises:
        LabelsFileError: the header does not have the required columns.
    """
    report = LabelImportReport()
    rows = _csv_rows(data)
    first = next(rows, None)
    if first is None or first[0] != 1 or _row_problem(*first) is not None:
        raise LabelsFileError(
            "the labels file has no readable header line; expected a first line 'key,tags'"
        )
    columns = _Columns.of(first[1])
    parsed: list[_Row] = []
    first_line_of: dict[str, int] = {}
    for line, fields in rows:
        report.rows += 1
        row = _parse_row(line, fields, columns, key_prefix, first_line_of, report)
        if row is not None:
            first_line_of[row.key] = line
            parsed.append(row)
    contradictions = [str(p) for p in report.problems if p.kind == "contradiction"]
    if contradictions and not columns.complete:
        # A correction is a deliberate statement; one that says both is a mistake worth
        # stopping for, not a row to skip while the rest of the file goes in.
        raise LabelsFileError(
            f"the corrections file adds and removes the same tag ({'; '.join(contradictions)}); "
            "nothing was imported: fix the file and import it again"
        )
    return parsed, report


def _parse_row(
    line: int,
    fields: list[str],
    columns: _Columns,
    key_prefix: str,
    first_line_of: dict[str, int],
    report: LabelImportReport,
) -> _Row | None:
    """One data row, or None with its problem added to ``report``."""

    def problem(kind: str, message: str) -> None:
        report.problems.append(LabelProblem(line, kind, message))

    if unreadable := _row_problem(line, fields):
        report.problems.append(unreadable)
        return None
    if len(fields) < len(columns.header):
        problem(
            "missing_column",
            f"has {len(fields)} field(s) but the header names {len(columns.header)} "
            f"({','.join(columns.header)})",
        )
        return None
    try:
        key = validate_key(key_prefix + fields[columns.key].strip())
    except InvalidKey as error:
        problem("bad_key", str(error))
        return None
    try:
        positives = parse_tags(fields[columns.positives]) if columns.positives is not None else []
        negatives = parse_tags(fields[columns.negatives]) if columns.negatives is not None else []
    except ValueError as error:
        problem("bad_tag", f"{key}: {error}")
        return None
    if both := sorted(set(positives) & set(negatives)):
        problem("contradiction", f"{key}: {', '.join(both)} both present and absent")
        return None
    if key in first_line_of:
        problem("duplicate", f"{key} is also on line {first_line_of[key]}; the first row is kept")
        return None
    return _Row(line, key, tuple(positives), tuple(negatives), columns.complete)


def _common_folder(keys: Iterable[str]) -> str:
    """The deepest folder (ending in '/') that holds every key, or '' for the whole store."""
    ordered = sorted(keys)
    first, last = ordered[0], ordered[-1]
    shared = next(
        (i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b),
        min(len(first), len(last)),
    )
    return first[: first.rfind("/", 0, shared) + 1]


def _keys_present(store: ObjectStore, keys: set[str]) -> set[str]:
    # One streamed listing instead of a request per row: a 100k-row file on S3 stays cheap.
    present: set[str] = set()
    if not keys:
        return present
    for info in store.iter_objects(_common_folder(keys)):
        if info.key in keys:
            present.add(info.key)
    return present


def import_labels(
    session: Session,
    store: ObjectStore,
    data: bytes,
    *,
    source: str,
    key_prefix: str = "",
) -> LabelImportReport:
    """Import the labels in ``data`` (a CSV file's bytes) for images in ``store``.

    Args:
        session: the caller's session; this function does not commit.
        store: where the labelled images live; rows naming keys it lacks are reported.
        data: the CSV file's bytes.
        source: recorded with each label (for example the file name).
        key_prefix: prepended to every key (for files listing bare file names).

    Returns:
        Counts of rows, images and labels imported, and every problem with its line.

    Raises:
        LabelsFileError: the file cannot be read at all (no usable header).
    """
    rows, report = parse_labels_csv(data, key_prefix=key_prefix)
    present = _keys_present(
        store, {row.key for row in rows if row.complete or row.positives or row.negatives}
    )
    existing = labels_by_image(session)
    records: list[LabelRecord] = []
    for row in rows:
        if not row.complete and not row.positives and not row.negatives:
            report.blank_corrections += 1
            continue
        if row.key not in present:
            report.problems.append(
                LabelProblem(row.line, "unknown_key", f"{row.key} does not exist in {store.url}")
            )
            continue
        uri = store.uri(row.key)
        positives = set(row.positives)
        negatives = set(row.negatives)
        if row.complete:
            # The row states the whole set: a tag it no longer lists is absent now.
            negatives |= {
                tag
                for tag, positive in existing.get(uri, {}).items()
                if positive and tag not in positives
            }
        records.extend(
            LabelRecord(uri, tag, True, source, row.complete) for tag in sorted(positives)
        )
        records.extend(
            LabelRecord(uri, tag, False, source, row.complete) for tag in sorted(negatives)
        )
        report.imported_images += 1
        report.positive_labels += len(positives)
        report.negative_labels += len(negatives)
    upsert_labels(session, records)
    report.problems.sort(key=lambda problem: problem.line)
    logger.info(
        "imported labels for %d images (%d problems)", report.imported_images, len(report.problems)
    )
    return report
