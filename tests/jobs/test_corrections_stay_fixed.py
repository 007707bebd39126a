"""A person's correction stays fixed through everything a model does afterwards: a rescore of
every image, a retag with new thresholds, and the promotion of a new champion that rescored it."""

from __future__ import annotations

from mlc_core.db.model_versions import override_threshold, require_model_version
from mlc_core.jobs.corrections import correct_tags
from mlc_core.jobs.retag import retag_images
from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.workspace import Workspace
from tests.jobs.scoring_support import put_tiny_images, query, register_champion

# Every class is tagged but the last, which no model tags.
THRESHOLDS = [0.0001] * 4 + [0.99999]


def _tags(workspace: Workspace, key: str) -> dict[str, tuple[str, str]]:
    rows = query(
        workspace,
        "select tag, source, model_version from current_tags where image_uri = :uri",
        uri=workspace.store.uri(key),
    )
    return {tag: (source, version) for tag, source, version in rows}


def test_a_correction_survives_rescore_retag_and_promotion(embedded_workspace: Workspace) -> None:
    workspace = embedded_workspace
    register_champion(workspace, "v1", thresholds=THRESHOLDS)
    corrected, other = put_tiny_images(workspace, 2)
    score_images(workspace)
    with workspace.transaction() as session:
        correct_tags(
            session, workspace.store, corrected, add=["triangle"], remove=["circle"], source="t"
        )

    def assert_still_corrected(version: str) -> None:
        tags = _tags(workspace, corrected)
        assert "circle" not in tags
        assert tags["triangle"] == ("human", version)
        assert tags["cross"] == ("model", version)
        # The image nobody corrected follows the model.
        assert _tags(workspace, other)["circle"] == ("model", version)

    assert_still_corrected("v1")
    score_images(workspace, mode="all")
    assert_still_corrected("v1")

    with workspace.transaction() as session:
        v1 = require_model_version(session, "v1")
        override_threshold(session, v1, "circle", 0.00001)
        override_threshold(session, v1, "triangle", 0.00001)
    retag_images(workspace, version="v1")
    assert_still_corrected("v1")
    # The retag did reach the uncorrected image.
    assert _tags(workspace, other)["triangle"] == ("model", "v1")

    register_champion(workspace, "v2", thresholds=THRESHOLDS)
    score_images(workspace, mode="stale")
    assert_still_corrected("v2")
