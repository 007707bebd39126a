"""The same train -> score -> tags path against a real S3 server and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from mlc_core.db.engine import create_db_engine
from mlc_core.db.migrate import upgrade_schema
from mlc_core.db.tag_search import TagQuery, search_tags
from mlc_core.errors import SchemaOutOfDate
from mlc_core.jobs.labels_import import import_labels
from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.training.train import train_model_version
from mlc_core.jobs.workspace import open_workspace
from tests.jobs.conftest import labels_csv, put_synthetic_images, tiny_settings


def test_a_server_database_must_be_migrated_first(
    isolated_mlc_environment: Path, postgres_url: str, s3_store_url: str
) -> None:
    settings = tiny_settings(
        isolated_mlc_environment, database_url=postgres_url, storage_url=s3_store_url
    )
    with pytest.raises(SchemaOutOfDate, match="mlc db upgrade"):
        open_workspace(settings)


@pytest.mark.slow
def test_train_score_and_query_tags_on_seaweedfs_and_postgresql(
    isolated_mlc_environment: Path, postgres_url: str, s3_store_url: str
) -> None:
    engine = create_db_engine(postgres_url)
    upgrade_schema(engine)
    engine.dispose()
    settings = tiny_settings(
        isolated_mlc_environment, database_url=postgres_url, storage_url=s3_store_url
    )
    workspace = open_workspace(settings)
    try:
        truth = put_synthetic_images(workspace, 40, folder="images/in bucket ü/")
        with workspace.transaction() as session:
            report = import_labels(session, workspace.store, labels_csv(truth), source="test")
        assert report.imported_images == len(truth)
        trained = train_model_version(workspace, settings.training)
        assert trained.status == "champion"
        assert trained.artifact_uri.startswith(s3_store_url)

        scored = score_images(workspace)
        assert scored.scored == len(truth)
        assert score_images(workspace).scored == 0

        with workspace.engine.connect() as connection:
            count = connection.execute(text("select count(*) from current_scores")).scalar_one()
        assert count == len(truth) * len(trained.classes)
        with workspace.transaction() as session:
            found = search_tags(session, TagQuery(all_tags=(trained.classes[0],), limit=1000))
        assert all(image.uri.startswith(s3_store_url) for image in found)
    finally:
        workspace.close()
