"""Read back what scoring wrote, for reports and the demo."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlc_core.db.models import Image, ImageTag, ModelVersion, Score


@dataclass(frozen=True)
class StoredScore:
    uri: str
    probabilities: list[float]
    tags: dict[str, float]


def scores_for_uris(
    session: Session, model_version: ModelVersion, uris: Sequence[str]
) -> dict[str, StoredScore]:
    """The given version's scores and tags of the current versions of ``uris``."""
    found: dict[str, StoredScore] = {}
    for start in range(0, len(uris), 500):
        chunk = list(uris[start : start + 500])
        rows = session.execute(
            select(Image.id, Image.uri, Score.probabilities)
            .join(Score, Score.image_id == Image.id)
            .where(
                Image.uri.in_(chunk),
                Image.superseded_at.is_(None),
                Score.model_version_id == model_version.id,
            )
        ).all()
        ids = {image_id: uri for image_id, uri, _ in rows}
        tags: dict[int, dict[str, float]] = {image_id: {} for image_id in ids}
        for image_id, tag, probability in session.execute(
            select(ImageTag.image_id, ImageTag.tag, ImageTag.probability).where(
                ImageTag.model_version_id == model_version.id, ImageTag.image_id.in_(list(ids))
            )
        ):
            tags[image_id][tag] = probability
        for image_id, uri, probabilities in rows:
            found[uri] = StoredScore(uri, [float(p) for p in probabilities], tags[image_id])
    return found
