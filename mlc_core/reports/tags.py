"""How tags, one image, runs, failures, the review list and a correction read to people.

Images are named by their store key (``images/a/1.jpg``), the name a person knows; the full
URI is in the CSV and JSON forms. A tag a person stated is marked ``(person)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from mlc_core.db.image_detail import ImageDetail
from mlc_core.db.images import Failure
from mlc_core.db.models import Run
from mlc_core.db.review import ReviewItem
from mlc_core.db.tag_search import FoundImage, ShownTag
from mlc_core.jobs.corrections import Correction
from mlc_core.jobs.scoring.reports import reason_kind
from mlc_core.reports.document import Document, Table, number

KeyOf = Callable[[str], str]


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def tag_text(tag: ShownTag) -> str:
    """``sea 0.91``, or ``sea (person)`` for a tag a person stated."""
    if tag.source == "human":
        return f"{tag.tag} (person)"
    return f"{tag.tag} {number(tag.probability, 2)}"


def found_images_table(question: str, images: Sequence[FoundImage], key_of: KeyOf) -> Document:
    """``mlc tags``: the images that answer the question, each with all its tags."""
    rows = [
        [key_of(image.uri), ", ".join(map(tag_text, image.tags)) or "-", image.model_version or "-"]
        for image in images
    ]
    document = Document(f"{question}: {len(images)} image(s)").add(
        Table(["key", "tags", "model"], rows)
    )
    return document


def found_image_record(image: FoundImage, key_of: KeyOf) -> dict[str, Any]:
    """One found image as a JSON line: key, URI, model version and each tag with its
    probability and source."""
    return {
        "key": key_of(image.uri),
        "uri": image.uri,
        "model_version": image.model_version,
        "tags": [
            {"tag": t.tag, "probability": t.probability, "source": t.source} for t in image.tags
        ],
    }


FOUND_IMAGE_CSV_HEADER = ["key", "uri", "model_version", "tag", "probability", "source"]


def found_image_csv_rows(image: FoundImage, key_of: KeyOf) -> list[list[Any]]:
    """One CSV row per tag (an image with no tag gets one row with an empty tag)."""
    key = key_of(image.uri)
    base = [key, image.uri, image.model_version or ""]
    if not image.tags:
        return [[*base, "", "", ""]]
    return [
        [*base, t.tag, "" if t.probability is None else t.probability, t.source] for t in image.tags
    ]


def image_detail_document(detail: ImageDetail, key: str) -> Document:
    """``mlc show KEY``: the image, each class beside its threshold, its tags and labels."""
    document = Document(key).add(
        f"uri {detail.uri}  etag {detail.etag}  {detail.size:,} bytes  "
        f"first seen {_when(detail.first_seen_at)}  status {detail.status}"
    )
    if detail.retired_at is not None:
        document.add(f"gone from the store since {_when(detail.retired_at)}; it shows no tags")
    if detail.error:
        document.add(f"failed {_when(detail.failed_at)}: {detail.error}")
    tags = {t.tag: t for t in detail.tags}
    if detail.scores:
        document.add(
            f"scored by {detail.model_version} at {_when(detail.scored_at)}",
            Table(
                ["class", "probability", "threshold", "tag"],
                [
                    [s.name, f"{s.probability:.3f}", f"{s.threshold:.3f}", _tag_mark(tags, s.name)]
                    for s in detail.scores
                ],
            ),
        )
    else:
        document.add("no model version that people see has scored it")
    document.add("tags: " + (", ".join(map(tag_text, detail.tags)) or "none"))
    if detail.labels:
        document.add(
            Table(
                ["label", "says", "source", "changed", "kind"],
                [
                    [
                        label.tag,
                        "present" if label.positive else "absent",
                        label.source,
                        _when(label.updated_at),
                        "whole tag set" if label.complete else "correction",
                    ]
                    for label in detail.labels
                ],
                title="a person's labels (they win over every model)",
            )
        )
    return document


def _tag_mark(tags: Mapping[str, ShownTag], name: str) -> str:
    tag = tags.get(name)
    if tag is None:
        return ""
    return "yes (person)" if tag.source == "human" else "yes"


def runs_table(runs: Sequence[Run]) -> Document:
    """``mlc runs``: each run with its counts and throughput."""
    rows = []
    for run in runs:
        counts = run.counts or {}
        seconds = counts.get("seconds")
        rows.append(
            [
                run.id,
                run.kind,
                run.status,
                _when(run.started_at),
                "-" if seconds is None else f"{float(seconds):.1f}",
                _run_counts(run.kind, counts),
                (run.error or "")[:120],
            ]
        )
    return Document(f"{len(runs)} most recent run(s)").add(
        Table(["run", "kind", "status", "started", "seconds", "counts", "error"], rows)
    )


def _run_counts(kind: str, counts: Mapping[str, Any]) -> str:
    if kind == "score":
        text = (
            f"{counts.get('scored', 0)} scored, {counts.get('failed', 0)} failed, "
            f"{counts.get('images_per_second', 0)} images/s"
        )
        drifted = counts.get("drift") or []
        return text + (f", drift in {', '.join(d['tag'] for d in drifted)}" if drifted else "")
    if kind == "train":
        return f"{counts.get('version', '-')} {counts.get('status', '')}".strip()
    if kind == "retag":
        return f"{counts.get('changed', 0)} of {counts.get('images', 0)} tag sets changed"
    if kind == "import_labels":
        return f"{counts.get('imported_images', 0)} images labelled"
    return ""


def failures_table(
    failures: Sequence[Failure], counts: Mapping[str, int], key_of: KeyOf
) -> Document:
    """``mlc failures``: how many failed for each kind of reason, then the ledger."""
    by_kind: dict[str, int] = {}
    for reason, count in counts.items():
        by_kind[reason_kind(reason)] = by_kind.get(reason_kind(reason), 0) + count
    document = Document(f"{sum(counts.values())} image(s) whose latest scoring failed")
    if by_kind:
        document.add(
            Table(
                ["reason", "images"],
                sorted(([k, n] for k, n in by_kind.items()), key=lambda r: (-r[1], r[0])),
            )
        )
    document.add(
        Table(
            ["key", "failed", "reason"],
            [[key_of(f.uri), _when(f.failed_at), f.reason] for f in failures],
            title=f"{len(failures)} shown, newest first",
        )
    )
    return document


def review_table(items: Sequence[ReviewItem], key_of: KeyOf) -> Document:
    """``mlc review``: the images most worth a person's label, nearest the threshold first."""
    return Document(f"{len(items)} image(s) to review, the least certain first").add(
        Table(
            ["key", "class", "probability", "threshold", "distance", "model"],
            [
                [
                    key_of(item.uri),
                    item.tag,
                    f"{item.probability:.3f}",
                    f"{item.threshold:.3f}",
                    f"{item.distance:.3f}",
                    item.model_version,
                ]
                for item in items
            ],
        ),
        "label them with `mlc labels set KEY +TAG -TAG`, or `mlc review --format csv`, fill in "
        "add/remove and `mlc labels import` the file",
    )


REVIEW_CSV_HEADER = ["key", "add", "remove", "class", "probability", "threshold", "model"]


def review_csv_row(item: ReviewItem, key_of: KeyOf) -> list[Any]:
    """A corrections row with ``add`` and ``remove`` left for the person to fill in."""
    return [
        key_of(item.uri),
        "",
        "",
        item.tag,
        f"{item.probability:.4f}",
        f"{item.threshold:.4f}",
        item.model_version,
    ]


def correction_summary(correction: Correction) -> Document:
    """What ``mlc labels set`` / ``clear`` changed."""
    parts = []
    if correction.added:
        parts.append("added " + ", ".join(correction.added))
    if correction.removed:
        parts.append("removed " + ", ".join(correction.removed))
    if correction.cleared:
        parts.append("handed back to the model: " + ", ".join(correction.cleared))
    document = Document(f"{correction.key}: " + ("; ".join(parts) or "nothing changed"))
    if correction.unchanged:
        document.add(f"  already so: {', '.join(correction.unchanged)}")
    for tag in correction.unpredictable:
        document.add(
            f"  note: no model version can predict {tag!r} yet; the label is kept and teaches "
            "the next model once enough images carry it"
        )
    return document
