"""The database of mlc: models, engines, the schema and the functions that read and write it.

SQLite (the embedded default) and PostgreSQL are both supported by one migration history. The
tables are described in :mod:`mlc_core.db.models`. These views are what people query (all of
them about the current version of each image, ``images.superseded_at IS NULL``, and the
champion model, ``model_versions.status = 'champion'``; ``model_version`` is the version name
such as ``v3``):

``current_tags(image_uri, tag, probability, model_version)``
    The tags of each image: the classes whose probability reached the class threshold.
``current_scores(image_uri, class_name, probability, model_version)``
    Every class's probability for each image: the long form of ``scores.probabilities``, whose
    position ``i`` belongs to ``model_versions.classes[i]``.
``scoring_failures(image_uri, error, failed_at)``
    Images that could not be scored, with the reason.

For example: ``SELECT image_uri FROM current_tags WHERE tag = 'beach' ORDER BY image_uri``.
"""

from mlc_core.db.engine import check_connection, create_db_engine, display_url
from mlc_core.db.migrate import (
    alembic_config,
    head_revision,
    require_current_schema,
    schema_revision,
    upgrade_schema,
)
from mlc_core.db.model_versions import (
    create_model_version,
    get_champion,
    get_model_version,
    list_model_versions,
    next_version_name,
    promote_model_version,
    set_decision,
)
from mlc_core.db.models import Base, Image, ImageTag, Label, ModelVersion, Run, Score
from mlc_core.db.queries import (
    ImageRecord,
    LabelRecord,
    ScoreRecord,
    TaggedImage,
    find_images_with_tags,
    labels_by_image,
    record_failures,
    register_images,
    upsert_labels,
    write_scores,
)
from mlc_core.db.runs import finish_run, start_run

__all__ = [
    "Base",
    "Image",
    "ImageRecord",
    "ImageTag",
    "Label",
    "LabelRecord",
    "ModelVersion",
    "Run",
    "Score",
    "ScoreRecord",
    "TaggedImage",
    "alembic_config",
    "check_connection",
    "create_db_engine",
    "create_model_version",
    "display_url",
    "find_images_with_tags",
    "finish_run",
    "get_champion",
    "get_model_version",
    "head_revision",
    "labels_by_image",
    "list_model_versions",
    "next_version_name",
    "promote_model_version",
    "record_failures",
    "register_images",
    "require_current_schema",
    "schema_revision",
    "set_decision",
    "start_run",
    "upgrade_schema",
    "upsert_labels",
    "write_scores",
]
