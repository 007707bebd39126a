"""Model versions: register a trained model, find the champion, promote, override thresholds.

Functions take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlc_core.db._statements import in_session
from mlc_core.db.engine import database_now
from mlc_core.db.models import ModelVersion, utc_now
from mlc_core.db.shown import refresh_after_promotion
from mlc_core.errors import NoChampionModel, UnknownModelVersion

_VERSION_NAME = re.compile(r"v(\d+)")


def create_model_version(
    session: Session,
    *,
    version: str,
    classes: list[str],
    thresholds: list[float],
    metrics: dict[str, Any],
    backbone: str,
    image_size: int,
    artifact_uri: str,
    artifact_sha256: str,
    card_uri: str,
) -> ModelVersion:
    """Record a trained model as a ``candidate`` and return it (with its id).

    Raises:
        ValueError: ``classes`` and ``thresholds`` differ in length.
    """
    if len(classes) != len(thresholds):
        raise ValueError(
            f"model version {version} has {len(classes)} classes but {len(thresholds)} "
            "thresholds; expected one threshold per class"
        )
    model_version = ModelVersion(
        version=version,
        status="candidate",
        classes=list(classes),
        thresholds=[float(threshold) for threshold in thresholds],
        threshold_overrides={},
        metrics=metrics,
        backbone=backbone,
        image_size=image_size,
        artifact_uri=artifact_uri,
        artifact_sha256=artifact_sha256,
        card_uri=card_uri,
    )
    session.add(model_version)
    session.flush()
    return model_version


def next_version_name(session: Session) -> str:
    """The name for the next model version: ``v1``, ``v2``, ... (highest existing + 1)."""
    numbers = [
        int(match.group(1))
        for version in session.scalars(select(ModelVersion.version))
        if (match := _VERSION_NAME.fullmatch(version))
    ]
    return f"v{max(numbers, default=0) + 1}"


def get_champion(session: Session) -> ModelVersion | None:
    """The model version that scores images, or ``None`` before the first promotion."""
    return session.scalars(
        select(ModelVersion).where(ModelVersion.status == "champion")
    ).one_or_none()


def get_model_version(session: Session, version: str) -> ModelVersion | None:
    """The model version named ``version`` (e.g. ``"v3"``), or ``None``."""
    return session.scalars(
        select(ModelVersion).where(ModelVersion.version == version)
    ).one_or_none()


def require_champion(session: Session) -> ModelVersion:
    """The champion.

    Raises:
        NoChampionModel: no version has been promoted yet.
    """
    champion = get_champion(session)
    if champion is None:
        raise NoChampionModel()
    return champion


def require_model_version(session: Session, version: str) -> ModelVersion:
    """The model version named ``version``.

    Raises:
        UnknownModelVersion: there is no such version.
    """
    found = get_model_version(session, version)
    if found is None:
        raise UnknownModelVersion(version, [v.version for v in list_model_versions(session)])
    return found


def list_model_versions(session: Session) -> list[ModelVersion]:
    """All model versions, newest first."""
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())))


def promote_model_version(session: Session, model_version: ModelVersion, decision: str) -> None:
    """Make ``model_version`` the champion and retire the previous one.

    Promoting a version older than the champion is a rollback: the champion it replaces is
    marked rolled back, and its tags are shown nowhere until it is promoted again (see
    :mod:`mlc_core.db.views`).

    Args:
        model_version: the version to promote; it may come from another (closed) session.
        decision: why it was promoted, kept with the version.
    """
    model_version = in_session(session, model_version)
    champion = get_champion(session)
    now = database_now(session)
    if champion is not None and champion.id != model_version.id:
        champion.status = "retired"
        if champion.id > model_version.id:
            champion.rolled_back_at = now
        # The partial unique index allows one champion: the old one must be retired in the
        # database before the new one is written.
        session.flush()
    model_version.status = "champion"
    model_version.promoted_at = now
    model_version.rolled_back_at = None
    model_version.decision = decision
    session.flush()
    refresh_after_promotion(session, model_version, champion)


def set_decision(session: Session, model_version: ModelVersion, decision: str) -> None:
    """Record why a candidate was not promoted (or any other verdict on it)."""
    model_version = in_session(session, model_version)
    model_version.decision = decision
    session.flush()


def override_threshold(
    session: Session, model_version: ModelVersion, class_name: str, threshold: float
) -> float:
    """Set one class's threshold by hand, recording the override and the value it replaced.

    Stored tag sets keep the old threshold until ``retag`` recomputes them.

    Returns:
        The threshold the class had before.

    Raises:
        ValueError: the class is not in this version's class list, or the threshold is not in
            (0, 1].
    """
    model_version = in_session(session, model_version)
    if class_name not in model_version.classes:
        raise ValueError(
            f"model {model_version.version} has no class {class_name!r}; its classes are "
            f"{', '.join(model_version.classes)}"
        )
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold {threshold} is outside (0, 1]")
    position = model_version.classes.index(class_name)
    thresholds = list(model_version.thresholds)
    previous = float(thresholds[position])
    thresholds[position] = float(threshold)
    overrides = dict(model_version.threshold_overrides or {})
    overrides[class_name] = {
        "threshold": float(threshold),
        "calibrated": float(overrides.get(class_name, {}).get("calibrated", previous)),
        "set_at": utc_now().isoformat(),
    }
    # New lists/dicts, so the ORM sees the JSON columns change.
    model_version.thresholds = thresholds
    model_version.threshold_overrides = overrides
    session.flush()
    return previous


def known_classes(session: Session) -> set[str]:
    """Every class some model version predicts."""
    return {name for classes in session.scalars(select(ModelVersion.classes)) for name in classes}
