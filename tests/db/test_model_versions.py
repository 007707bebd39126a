"""Model versions: names, the one champion, promotion and decisions."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mlc_core.db.model_versions import (
    get_champion,
    get_model_version,
    list_model_versions,
    next_version_name,
    promote_model_version,
    require_champion,
    require_model_version,
    set_decision,
)
from mlc_core.db.models import ModelVersion
from mlc_core.errors import NoChampionModel, UnknownModelVersion
from tests.db.support import CLASSES, add_model_version


def test_next_version_name_counts_up_from_the_highest_version(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        assert next_version_name(session) == "v1"
        add_model_version(session, "v1")
        add_model_version(session, "v7")

        assert next_version_name(session) == "v8"


def test_a_new_model_version_is_a_candidate(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        add_model_version(session, "v1")
    with Session(migrated_engine) as session:
        stored = get_model_version(session, "v1")

        assert stored is not None
        assert (stored.status, stored.classes, stored.thresholds) == (
            "candidate",
            CLASSES,
            [0.5, 0.5, 0.5],
        )
        assert get_champion(session) is None
        assert get_model_version(session, "v2") is None


def test_promote_retires_the_previous_champion(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        add_model_version(session, "v1", champion=True)
        candidate = add_model_version(session, "v2")
    with Session(migrated_engine) as session, session.begin():
        promote_model_version(session, candidate, "better micro F1")
    with Session(migrated_engine) as session:
        statuses = {mv.version: mv.status for mv in list_model_versions(session)}
        champion = get_champion(session)

    assert statuses == {"v1": "retired", "v2": "champion"}
    assert champion is not None
    assert (champion.version, champion.decision) == ("v2", "better micro F1")
    assert champion.promoted_at is not None


def test_the_database_refuses_a_second_champion(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        add_model_version(session, "v1", champion=True)
        add_model_version(session, "v2")
    with Session(migrated_engine) as session, pytest.raises(IntegrityError), session.begin():
        second = session.scalars(select(ModelVersion).where(ModelVersion.version == "v2")).one()
        second.status = "champion"
        session.flush()


def test_set_decision_records_why_a_candidate_stayed_one(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        candidate = add_model_version(session, "v1")
    with Session(migrated_engine) as session, session.begin():
        set_decision(session, candidate, "micro F1 0.71 is below the champion's 0.80")
    with Session(migrated_engine) as session:
        stored = get_model_version(session, "v1")

        assert stored is not None
        assert (stored.status, stored.decision) == (
            "candidate",
            "micro F1 0.71 is below the champion's 0.80",
        )


def test_list_model_versions_puts_the_newest_first(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        for version in ("v1", "v2", "v3"):
            add_model_version(session, version)
    with Session(migrated_engine) as session:
        versions = [mv.version for mv in list_model_versions(session)]

    assert versions == ["v3", "v2", "v1"]


def test_an_unknown_version_is_one_error_naming_it_and_the_known_ones(
    migrated_engine: Engine,
) -> None:
    with Session(migrated_engine) as session, session.begin():
        add_model_version(session, "v1")
        add_model_version(session, "v2")
    with Session(migrated_engine) as session:
        with pytest.raises(UnknownModelVersion, match=r"'v9'.*\(v2, v1\)") as raised:
            require_model_version(session, "v9")
        assert raised.value.known == ["v2", "v1"]
        assert require_model_version(session, "v1").version == "v1"


def test_without_a_champion_require_champion_says_train_first(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, pytest.raises(NoChampionModel, match="mlc train"):
        require_champion(session)
