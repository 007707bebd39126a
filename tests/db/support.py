"""Helpers the database tests share: a model version and an image record."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from mlc_core.db.images import ImageRecord
from mlc_core.db.model_versions import create_model_version, promote_model_version
from mlc_core.db.models import ModelVersion

CLASSES = ["beach", "dog", "sky"]


def add_model_version(
    session: Session,
    version: str,
    *,
    champion: bool = False,
    classes: Sequence[str] = tuple(CLASSES),
) -> ModelVersion:
    model_version = create_model_version(
        session,
        version=version,
        classes=list(classes),
        thresholds=[0.5] * len(classes),
        metrics={"micro_f1": 0.8},
        backbone="compact_cnn",
        image_size=64,
        artifact_uri=f"models/{version}/model.keras",
        artifact_sha256="0" * 64,
        card_uri=f"models/{version}/card.json",
    )
    if champion:
        promote_model_version(session, model_version, "first model")
    return model_version


def image(uri: str, etag: str = "e1") -> ImageRecord:
    return ImageRecord(uri=uri, etag=etag, size=100, modified_at=datetime(2026, 1, 1, tzinfo=UTC))
