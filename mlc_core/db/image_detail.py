"""Everything mlc knows about one image: what ``mlc show KEY`` and the web page's image view read.

Functions take a session and never commit.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlc_core.db._statements import escape_like
from mlc_core.db.labels import StoredLabel, labels_of
from mlc_core.db.models import Image, ModelVersion, Score
from mlc_core.db.tag_search import ShownTag, tags_of_images
from mlc_core.db.views import shown_scores


@dataclass(frozen=True)
class ClassScore:
    """One class's probability under the shown version, beside that version's threshold."""

    name: str
    probability: float
    threshold: float


@dataclass(frozen=True)
class ImageDetail:
    """The newest version of an image and what people see of it.

    ``scores`` is empty when no shown version scored it (new, failed, or only labelled);
    ``tags`` are its current tags, a person's labels applied; ``retired_at`` is set when the
    store no longer has it (it then shows no tags).
    """

    uri: str
    etag: str
    size: int
    status: str
    first_seen_at: datetime
    retired_at: datetime | None
    error: str | None
    failed_at: datetime | None
    model_version: str | None
    scored_at: datetime | None
    scores: tuple[ClassScore, ...]
    tags: tuple[ShownTag, ...]
    labels: tuple[StoredLabel, ...]


def describe_image(session: Session, uri: str) -> ImageDetail | None:
    """What is known of the image at ``uri`` (its newest version), or None if it was never
    registered."""
    image = session.scalars(
        select(Image)
        .where(Image.uri == uri, Image.superseded_at.is_(None))
        .order_by(Image.id.desc())
        .limit(1)
    ).first()
    if image is None:
        return None
    shown = session.execute(
        select(ModelVersion, shown_scores.c.probabilities, shown_scores.c.scored_at)
        .join(shown_scores, shown_scores.c.model_version_id == ModelVersion.id)
        .where(shown_scores.c.image_id == image.id)
    ).first()
    scores: tuple[ClassScore, ...] = ()
    version = scored_at = None
    if shown is not None:
        model_version, probabilities, scored_at = shown
        version = model_version.version
        scores = tuple(
            ClassScore(name, float(p), float(t))
            for name, p, t in zip(
                model_version.classes, probabilities, model_version.thresholds, strict=True
            )
        )
    return ImageDetail(
        uri=image.uri,
        etag=image.etag,
        size=image.size,
        status=image.status,
        first_seen_at=image.first_seen_at,
        retired_at=image.retired_at,
        error=image.error,
        failed_at=image.failed_at,
        model_version=version,
        scored_at=scored_at,
        scores=scores,
        tags=tuple(tags_of_images(session, [image.id]).get(uri, [])),
        labels=tuple(labels_of(session, uri)),
    )


def similar_uris(session: Session, uri: str, *, limit: int = 5) -> list[str]:
    """Registered URIs a mistyped ``uri`` may have meant: those ending in its file name, else
    the names in its folder that look most like it."""
    folder, _, name = uri.rpartition("/")
    if not name:
        return []
    current = Image.superseded_at.is_(None)
    same_name = list(
        session.scalars(
            select(Image.uri)
            .where(Image.uri.like("%/" + escape_like(name), escape="\\"), current)
            .order_by(Image.uri)
            .limit(limit)
        )
    )
    if same_name:
        return same_name
    # A bounded look at the folder: enough for a typo, never a scan of a million keys.
    neighbours = list(
        session.scalars(
            select(Image.uri)
            .where(Image.uri.like(escape_like(folder + "/") + "%", escape="\\"), current)
            .order_by(Image.uri)
            .limit(5000)
        )
    )
    # File names compared alone: the folder they share would make every name look alike.
    by_name = {neighbour.rpartition("/")[2]: neighbour for neighbour in neighbours}
    close = difflib.get_close_matches(name, list(by_name), n=limit, cutoff=0.8)
    return [by_name[match] for match in close]


@dataclass(frozen=True)
class VersionScores:
    """What one model version said of an image: each class's probability and threshold."""

    version: str
    status: str
    scored_at: datetime
    scores: tuple[ClassScore, ...]


def scores_by_version(session: Session, uri: str) -> list[VersionScores]:
    """The scores of every model version that scored the newest version of the image at
    ``uri``, newest model version first (shown or not: a person compares them)."""
    newest = (
        select(Image.id)
        .where(Image.uri == uri, Image.superseded_at.is_(None))
        .order_by(Image.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    found = session.execute(
        select(ModelVersion, Score.probabilities, Score.scored_at)
        .join(Score, Score.model_version_id == ModelVersion.id)
        .where(Score.image_id == newest)
        .order_by(ModelVersion.id.desc())
    ).all()
    return [
        VersionScores(
            version.version,
            version.status,
            scored_at,
            tuple(
                ClassScore(name, float(p), float(t))
                for name, p, t in zip(
                    version.classes, probabilities, version.thresholds, strict=True
                )
            ),
        )
        for version, probabilities, scored_at in found
    ]
