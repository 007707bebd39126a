"""The views people query, one definition per schema version, and their columns for code.

Migrations create the views of their version with :func:`create_views`; code that answers the
same questions (``mlc tags``, the web page) selects from the view objects below, so the
command line and SQL never disagree. A version's SQL never changes once released: a new
shape is a new version and a new migration.

Version 5 (current) answers exactly as version 4, from the kept table ``shown_tags`` (see
:mod:`mlc_core.db.shown_tags`): version 4's union with the labels, anti-join and join over the
images were planned by PostgreSQL as hash joins over every image on each lookup, 0.8-4 s for
the first page of a tag at a million images; from the kept table the same page is an index walk
on ``(tag, image_id)``. The other views are version 4's.

Version 4 answers exactly as version 3, from the shown version each image row keeps
(``images.shown_model_version_id``, see :mod:`mlc_core.db.shown`): deciding it in the view
joined every score of every image on each lookup. ``current_tags`` also carries ``image_id``,
the order pages follow.

Version 3 is version 2 with people's labels: ``current_tags`` shows a tag a positive
label adds and hides one a label removes, whatever any model says, and names each row's
``source`` (``model`` or ``human``). A human row carries the shown version's probability of the
tag where that version tagged the image, else none.

Version 2: for each current image (not superseded, not retired) whose latest scoring
did not fail, ``shown_scores`` holds the one score row people see: the champion's where the
champion scored the image, else that of the version that was champion most recently among
those that scored it. A version that was never champion, or that a rollback made step down
(``rolled_back_at``), is never shown. ``current_tags`` and ``current_scores`` present that
row's tags and probabilities; ``scoring_failures`` the images whose latest scoring failed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, DateTime, Float, String, column, table

# Version 1: the champion's rows only (a promotion emptied the views until a rescore).
_V1_CURRENT_TAGS = """
CREATE VIEW current_tags AS
SELECT images.uri AS image_uri,
       image_tags.tag AS tag,
       image_tags.probability AS probability,
       model_versions.version AS model_version
FROM image_tags
JOIN images ON images.id = image_tags.image_id
JOIN model_versions ON model_versions.id = image_tags.model_version_id
WHERE images.superseded_at IS NULL
  AND model_versions.status = 'champion'
"""
_V1_SCORES_FROM = """
FROM scores
JOIN images ON images.id = scores.image_id
JOIN model_versions ON model_versions.id = scores.model_version_id
"""
_V1_SCORES_WHERE = """
WHERE images.superseded_at IS NULL
  AND model_versions.status = 'champion'
"""
_V1_FAILURES = """
CREATE VIEW scoring_failures AS
SELECT images.uri AS image_uri,
       images.error AS error,
       images.failed_at AS failed_at
FROM images
WHERE images.superseded_at IS NULL
  AND images.status = 'failed'
"""

# Version 2.
_V2_SHOWN_SCORES = """
CREATE VIEW shown_scores AS
SELECT scores.image_id AS image_id,
       scores.model_version_id AS model_version_id,
       scores.probabilities AS probabilities,
       scores.scored_at AS scored_at
FROM scores
JOIN images ON images.id = scores.image_id
JOIN model_versions ON model_versions.id = scores.model_version_id
WHERE images.superseded_at IS NULL
  AND images.retired_at IS NULL
  AND images.status <> 'failed'
  AND model_versions.promoted_at IS NOT NULL
  AND model_versions.rolled_back_at IS NULL
  AND NOT EXISTS (
      SELECT 1
      FROM scores AS newer
      JOIN model_versions AS newer_version ON newer_version.id = newer.model_version_id
      WHERE newer.image_id = scores.image_id
        AND newer_version.promoted_at IS NOT NULL
        AND newer_version.rolled_back_at IS NULL
        AND newer_version.promoted_at > model_versions.promoted_at
  )
"""
_V2_CURRENT_TAGS = """
CREATE VIEW current_tags AS
SELECT images.uri AS image_uri,
       image_tags.tag AS tag,
       image_tags.probability AS probability,
       model_versions.version AS model_version
FROM shown_scores
JOIN image_tags ON image_tags.image_id = shown_scores.image_id
               AND image_tags.model_version_id = shown_scores.model_version_id
JOIN images ON images.id = shown_scores.image_id
JOIN model_versions ON model_versions.id = shown_scores.model_version_id
"""
_V2_SCORES_FROM = """
FROM shown_scores AS scores
JOIN images ON images.id = scores.image_id
JOIN model_versions ON model_versions.id = scores.model_version_id
"""
_V2_FAILURES = """
CREATE VIEW scoring_failures AS
SELECT images.uri AS image_uri,
       images.error AS error,
       images.failed_at AS failed_at
FROM images
WHERE images.superseded_at IS NULL
  AND images.retired_at IS NULL
  AND images.status = 'failed'
"""

# Version 3: labels win over models.
_V3_CURRENT_TAGS = """
CREATE VIEW current_tags AS
SELECT images.uri AS image_uri,
       image_tags.tag AS tag,
       image_tags.probability AS probability,
       model_versions.version AS model_version,
       'model' AS source
FROM shown_scores
JOIN image_tags ON image_tags.image_id = shown_scores.image_id
               AND image_tags.model_version_id = shown_scores.model_version_id
JOIN images ON images.id = shown_scores.image_id
JOIN model_versions ON model_versions.id = shown_scores.model_version_id
WHERE NOT EXISTS (
    SELECT 1 FROM labels WHERE labels.image_uri = images.uri AND labels.tag = image_tags.tag
)
UNION ALL
SELECT images.uri AS image_uri,
       labels.tag AS tag,
       (SELECT image_tags.probability
        FROM shown_scores
        JOIN image_tags ON image_tags.image_id = shown_scores.image_id
                       AND image_tags.model_version_id = shown_scores.model_version_id
        WHERE shown_scores.image_id = images.id AND image_tags.tag = labels.tag) AS probability,
       (SELECT model_versions.version
        FROM shown_scores
        JOIN model_versions ON model_versions.id = shown_scores.model_version_id
        WHERE shown_scores.image_id = images.id) AS model_version,
       'human' AS source
FROM labels
JOIN images ON images.uri = labels.image_uri
WHERE labels.positive
  AND images.superseded_at IS NULL
  AND images.retired_at IS NULL
"""

# Version 4: version 3 read from images.shown_model_version_id (kept by mlc_core.db.shown)
# instead of deciding the shown version in the view, so a lookup is an index walk.
_V4_CURRENT_IMAGE = """images.superseded_at IS NULL
  AND images.retired_at IS NULL"""
_V4_SHOWN_SCORES = f"""
CREATE VIEW shown_scores AS
SELECT scores.image_id AS image_id,
       scores.model_version_id AS model_version_id,
       scores.probabilities AS probabilities,
       scores.scored_at AS scored_at
FROM images
JOIN scores ON scores.image_id = images.id
           AND scores.model_version_id = images.shown_model_version_id
WHERE {_V4_CURRENT_IMAGE}
  AND images.status <> 'failed'
"""
_V4_CURRENT_TAGS = f"""
CREATE VIEW current_tags AS
SELECT images.uri AS image_uri,
       image_tags.tag AS tag,
       image_tags.probability AS probability,
       model_versions.version AS model_version,
       'model' AS source,
       images.id AS image_id
FROM images
JOIN image_tags ON image_tags.image_id = images.id
               AND image_tags.model_version_id = images.shown_model_version_id
JOIN model_versions ON model_versions.id = images.shown_model_version_id
WHERE {_V4_CURRENT_IMAGE}
  AND images.status <> 'failed'
  AND NOT EXISTS (
      SELECT 1 FROM labels WHERE labels.image_uri = images.uri AND labels.tag = image_tags.tag
  )
UNION ALL
SELECT images.uri AS image_uri,
       labels.tag AS tag,
       (SELECT image_tags.probability
        FROM image_tags
        WHERE image_tags.image_id = images.id
          AND image_tags.model_version_id = images.shown_model_version_id
          AND image_tags.tag = labels.tag
          AND images.status <> 'failed') AS probability,
       (SELECT model_versions.version
        FROM model_versions
        WHERE model_versions.id = images.shown_model_version_id
          AND images.status <> 'failed') AS model_version,
       'human' AS source,
       images.id AS image_id
FROM labels
JOIN images ON images.uri = labels.image_uri
WHERE labels.positive
  AND {_V4_CURRENT_IMAGE}
"""

# Version 5: the kept rows of version 4's current_tags (mlc_core.db.shown_tags keeps them;
# only current images have rows). The left join: a human row may name no version.
_V5_CURRENT_TAGS = """
CREATE VIEW current_tags AS
SELECT images.uri AS image_uri,
       shown_tags.tag AS tag,
       shown_tags.probability AS probability,
       model_versions.version AS model_version,
       shown_tags.source AS source,
       shown_tags.image_id AS image_id
FROM shown_tags
JOIN images ON images.id = shown_tags.image_id
LEFT JOIN model_versions ON model_versions.id = shown_tags.model_version_id
"""

# Position i of the probabilities belongs to position i of model_versions.classes: both
# arrays are unnested with their index and joined on it.
_SCORES_SELECT_SQLITE = """
CREATE VIEW current_scores AS
SELECT images.uri AS image_uri,
       class.value AS class_name,
       CAST(probability.value AS REAL) AS probability,
       model_versions.version AS model_version
{source}
JOIN json_each(model_versions.classes) AS class
JOIN json_each(scores.probabilities) AS probability ON probability.key = class.key
{where}
"""
_SCORES_SELECT_POSTGRESQL = """
CREATE VIEW current_scores AS
SELECT images.uri AS image_uri,
       class.name AS class_name,
       CAST(probability.value AS DOUBLE PRECISION) AS probability,
       model_versions.version AS model_version
{source}
CROSS JOIN LATERAL json_array_elements_text(model_versions.classes)
    WITH ORDINALITY AS class(name, position)
JOIN LATERAL json_array_elements_text(scores.probabilities)
    WITH ORDINALITY AS probability(value, position) ON probability.position = class.position
{where}
"""

_VIEWS: dict[int, tuple[str, ...]] = {
    1: ("current_tags", "current_scores", "scoring_failures"),
    2: ("shown_scores", "current_tags", "current_scores", "scoring_failures"),
    3: ("shown_scores", "current_tags", "current_scores", "scoring_failures"),
    4: ("shown_scores", "current_tags", "current_scores", "scoring_failures"),
    5: ("shown_scores", "current_tags", "current_scores", "scoring_failures"),
}


def _statements(version: int, dialect: str) -> list[str]:
    scores = _SCORES_SELECT_POSTGRESQL if dialect == "postgresql" else _SCORES_SELECT_SQLITE
    if version == 1:
        current_scores = scores.format(source=_V1_SCORES_FROM, where=_V1_SCORES_WHERE)
        return [_V1_CURRENT_TAGS, current_scores, _V1_FAILURES]
    if version in (2, 3):
        current_scores = scores.format(source=_V2_SCORES_FROM, where="")
        current_tags = _V2_CURRENT_TAGS if version == 2 else _V3_CURRENT_TAGS
        return [_V2_SHOWN_SCORES, current_tags, current_scores, _V2_FAILURES]
    if version in (4, 5):
        current_scores = scores.format(source=_V2_SCORES_FROM, where="")
        current_tags = _V4_CURRENT_TAGS if version == 4 else _V5_CURRENT_TAGS
        return [_V4_SHOWN_SCORES, current_tags, current_scores, _V2_FAILURES]
    raise ValueError(f"there are no views of version {version}")


def create_views(op: Any, *, version: int) -> None:
    """Create the views of ``version`` in a migration (``op`` is Alembic's)."""
    for statement in _statements(version, op.get_context().dialect.name):
        op.execute(statement)


def drop_views(op: Any, *, version: int) -> None:
    """Drop the views of ``version``, those that depend on others first."""
    for name in reversed(_VIEWS[version]):
        op.execute(f"DROP VIEW IF EXISTS {name}")


VIEW_NAMES = _VIEWS[max(_VIEWS)]


def computed_current_tags_sql() -> str:
    """The query views version 4 answered ``current_tags`` with, deciding every row from the
    scores, labels and images: what ``shown_tags`` must hold (tests compare the two)."""
    return _V4_CURRENT_TAGS.split(" AS\n", 1)[1]


# The current views as code sees them.
shown_scores = table(
    "shown_scores",
    column("image_id"),
    column("model_version_id"),
    column("probabilities", JSON),
    column("scored_at", DateTime(timezone=True)),
)
current_tags = table(
    "current_tags",
    column("image_uri", String),
    column("tag", String),
    column("probability", Float),
    column("model_version", String),
    column("source", String),
    # Version 4: the image row's id, the order pages follow (see mlc_core.db.tag_search).
    column("image_id"),
)
scoring_failures = table(
    "scoring_failures",
    column("image_uri", String),
    column("error", String),
    column("failed_at", DateTime(timezone=True)),
)
current_scores = table(
    "current_scores",
    column("image_uri", String),
    column("class_name", String),
    column("probability", Float),
    column("model_version", String),
)
