"""Job runs: started and finished with their counts."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mlc_core.db.models import Run
from mlc_core.db.runs import finish_run, start_run
from tests.db.support import add_model_version


def test_finish_run_records_status_counts_and_model_version(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        model_version_id = add_model_version(session, "v1").id
        run = start_run(session, "score", {"mode": "new"})
    # The run object comes from a session that is closed by now, as in a real job.
    with Session(migrated_engine) as session, session.begin():
        finish_run(
            session,
            run,
            status="succeeded",
            counts={"scored": 3},
            model_version_id=model_version_id,
        )
    with Session(migrated_engine) as session:
        stored = session.scalars(select(Run)).one()

        assert (stored.kind, stored.status, stored.parameters, stored.counts) == (
            "score",
            "succeeded",
            {"mode": "new"},
            {"scored": 3},
        )
        assert stored.model_version_id == model_version_id
        assert stored.finished_at is not None


def test_start_run_refuses_an_unknown_kind(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, pytest.raises(ValueError, match="unknown run kind"):
        start_run(session, "dance", {})
