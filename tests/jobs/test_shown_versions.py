"""Tags never vanish: each current image shows the tags of the champion where it scored the
image, else those of the most recent champion that did; never a rolled-back version's, never a
candidate's, never those of an image whose latest scoring failed."""

from __future__ import annotations

from sqlalchemy import select

from mlc_core.db.model_versions import (
    create_model_version,
    promote_model_version,
    require_model_version,
)
from mlc_core.db.models import Image
from mlc_core.db.scores import ImageScore, write_scores
from mlc_core.db.tag_search import TagQuery, search_tags
from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.workspace import Workspace
from tests.jobs.scoring_support import put_tiny_images, query, register_champion, tiny_jpeg

SCORING = {"batch_size": 4, "read_workers": 2}
EVERY_CLASS = [0.0001] * 5


def _shown(workspace: Workspace) -> dict[str, str]:
    """image key -> the version whose tags the views show for it."""
    root = workspace.store.root_uri
    return {
        uri.removeprefix(root): version
        for uri, version in query(
            workspace, "select distinct image_uri, model_version from current_tags"
        )
    }


def _promote(workspace: Workspace, version: str) -> None:
    with workspace.transaction() as session:
        promote_model_version(session, require_model_version(session, version), "a test")


def test_a_promotion_without_a_rescore_keeps_every_image_tagged(
    embedded_workspace: Workspace,
) -> None:
    workspace = embedded_workspace
    register_champion(workspace, "v1", thresholds=EVERY_CLASS)
    keys = put_tiny_images(workspace, 6)
    score_images(workspace)

    register_champion(workspace, "v2", thresholds=EVERY_CLASS)

    assert _shown(workspace) == dict.fromkeys(keys, "v1")
    with workspace.transaction() as session:
        found = search_tags(session, TagQuery(all_tags=("circle",), limit=10))
    assert [image.model_version for image in found] == ["v1"] * 6
    score_images(workspace, prefixes=["images/img-0000"], discover=False)
    assert _shown(workspace) == {
        key: "v2" if key.startswith("images/img-0000") else "v1" for key in keys
    }


def test_a_rolled_back_version_shows_no_tags_and_a_candidate_never_does(
    embedded_workspace: Workspace,
) -> None:
    workspace = embedded_workspace
    register_champion(workspace, "v1", thresholds=EVERY_CLASS)
    old = put_tiny_images(workspace, 3, folder="images/old/")
    score_images(workspace)
    register_champion(workspace, "v2", thresholds=EVERY_CLASS)
    new = put_tiny_images(workspace, 2, folder="images/new/")
    score_images(workspace, prefixes=["images/new/"])
    assert _shown(workspace) == {**dict.fromkeys(old, "v1"), **dict.fromkeys(new, "v2")}
    _score_as_a_candidate(workspace, "v3")
    assert _shown(workspace) == {**dict.fromkeys(old, "v1"), **dict.fromkeys(new, "v2")}

    _promote(workspace, "v1")  # a rollback

    # v2's tags are gone from the views; its rows are kept for when it is promoted again.
    assert _shown(workspace) == dict.fromkeys(old, "v1")
    [(rolled_back_at,)] = query(
        workspace, "select rolled_back_at from model_versions where version = 'v2'"
    )
    assert rolled_back_at is not None
    _promote(workspace, "v2")
    assert _shown(workspace) == {**dict.fromkeys(old, "v1"), **dict.fromkeys(new, "v2")}


def _score_as_a_candidate(workspace: Workspace, version: str) -> None:
    """Write tags of every image under a version that was never champion."""
    with workspace.transaction() as session:
        champion = require_model_version(session, "v1")
        candidate = create_model_version(
            session,
            version=version,
            classes=list(champion.classes),
            thresholds=list(champion.thresholds),
            metrics={},
            backbone=champion.backbone,
            image_size=champion.image_size,
            artifact_uri=champion.artifact_uri,
            artifact_sha256=champion.artifact_sha256,
            card_uri=champion.card_uri,
        )
        image_ids = list(session.scalars(select(Image.id)))
        write_scores(
            session,
            candidate.id,
            None,
            [ImageScore(i, (0.9,) * 5, (("circle", 0.9),)) for i in image_ids],
        )


def test_an_image_whose_latest_scoring_failed_shows_no_model_tags(
    embedded_workspace: Workspace,
) -> None:
    workspace = embedded_workspace
    register_champion(workspace, thresholds=EVERY_CLASS)
    put_tiny_images(workspace, 2)
    workspace.store.put("images/large.jpg", tiny_jpeg(5, side=64))
    score_images(workspace)
    assert len(_shown(workspace)) == 3
    strict = workspace.settings.model_copy(
        update={"scoring": workspace.settings.scoring.model_copy(update={"max_image_pixels": 2000})}
    )

    report = score_images(Workspace(strict, workspace.engine, workspace.store), mode="all")

    assert report.failed == 1
    assert "images/large.jpg" not in _shown(workspace)
    assert query(workspace, "select count(*) from scoring_failures") == [(1,)]
