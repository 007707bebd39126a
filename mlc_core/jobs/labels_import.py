"""Import ground-truth labels from a CSV file.

The file has a header and the columns ``key,tags`` (``filename`` is accepted for ``key``), with
tags joined by ``|``; an optional ``negative_tags`` column states tags that are known to be
absent. A row states the image's whole label set: a tag that an earlier import marked present
and this row no longer lists becomes a negative label.

Problems are collected per line, never fatal: every valid row is imported and every bad one is
reported with its line number, so one typo does not cost a night's labelling.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from mlc_core.db.queries import LabelRecord, labels_by_image, upsert_labels
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


def _decoded_lines(data: bytes, report: LabelImportReport) -> Iterable[tuple[int, str]]:
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            report.problems.append(
                LabelProblem(
                    number,
                    "bad_encoding",
                    f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1}); "
                    "save the file as UTF-8",
                )
            )
            continue
        yield number, text.rstrip("\r")


def parse_labels_csv(data: bytes, *, key_prefix: str = "") -> tuple[list[_Row], LabelImportReport]:
    """Parse a labels CSV into rows, collecting a problem for each bad line.

    Raises:
        LabelsFileError: the header does not have the required columns.
    """
    report = LabelImportReport()
    lines = iter(_decoded_lines(data, report))
    header_line = next(lines, None)
    if header_line is None or header_line[0] != 1:
        raise LabelsFileError(
            "the labels file has no readable header line; expected a first line 'key,tags'"
        )
    header = [name.strip().lower() for name in next(csv.reader([header_line[1]]))]
    key_column = next((name for name in KEY_COLUMNS if name in header), None)
    if key_column is None or "tags" not in header:
        raise LabelsFileError(
            f"the labels file's header is {','.join(header) or '(empty)'}; expected the columns "
            "key,tags (and optionally negative_tags)"
        )
    key_at, tags_at = header.index(key_column), header.index("tags")
    negatives_at = header.index("negative_tags") if "negative_tags" in header else None

    rows: list[_Row] = []
    first_line_of: dict[str, int] = {}
    for number, text in lines:
        if not text.strip():
            continue
        report.rows += 1
        fields = next(csv.reader([text]))
        if len(fields) < len(header):
            report.problems.append(
                LabelProblem(
                    number,
                    "missing_column",
                    f"has {len(fields)} field(s) but the header names {len(header)} "
                    f"({','.join(header)})",
                )
            )
            continue
        try:
            key = validate_key(key_prefix + fields[key_at].strip())
        except InvalidKey as error:
            report.problems.append(LabelProblem(number, "bad_key", str(error)))
            continue
        try:
            positives = parse_tags(fields[tags_at])
            negatives = parse_tags(fields[negatives_at]) if negatives_at is not None else []
        except ValueError as error:
            report.problems.append(LabelProblem(number, "bad_tag", f"{key}: {error}"))
            continue
        if both := sorted(set(positives) & set(negatives)):
            report.problems.append(
                LabelProblem(
                    number, "contradiction", f"{key}: {', '.join(both)} both present and absent"
                )
            )
            continue
        if key in first_line_of:
            report.problems.append(
                LabelProblem(
                    number,
                    "duplicate",
                    f"{key} is also on line {first_line_of[key]}; the first row is kept",
                )
            )
            continue
        first_line_of[key] = number
        rows.append(_Row(number, key, tuple(positives), tuple(negatives)))
    return rows, report


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
    present = _keys_present(store, {row.key for row in rows})
    existing = labels_by_image(session)
    records: list[LabelRecord] = []
    for row in rows:
        if row.key not in present:
            report.problems.append(
                LabelProblem(row.line, "unknown_key", f"{row.key} does not exist in {store.url}")
            )
            continue
        uri = store.uri(row.key)
        positives = set(row.positives)
        negatives = set(row.negatives)
        negatives |= {
            tag
            for tag, positive in existing.get(uri, {}).items()
            if positive and tag not in positives
        }
        records.extend(LabelRecord(uri, tag, True, source) for tag in sorted(positives))
        records.extend(LabelRecord(uri, tag, False, source) for tag in sorted(negatives))
        report.imported_images += 1
        report.positive_labels += len(positives)
        report.negative_labels += len(negatives)
    upsert_labels(session, records)
    report.problems.sort(key=lambda problem: problem.line)
    logger.info(
        "imported labels for %d images (%d problems)", report.imported_images, len(report.problems)
    )
    return report
