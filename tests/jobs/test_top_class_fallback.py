"""With MLC_SCORING__TOP_CLASS_FALLBACK an image no class reaches gets its most probable class;
without it (the default) such an image has no tag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlc_core.jobs.retag import retag_images
from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.workspace import Workspace
from tests.jobs.scoring_support import open_backend, put_tiny_images, query, register_champion

IMAGES = 6
# A sigmoid never reaches 1.0: with these thresholds no class is tagged on its own.
UNREACHABLE = [1.0] * 5


def _tags_and_probabilities(workspace: Workspace) -> dict[str, tuple[set[str], list[float]]]:
    rows = query(
        workspace,
        "select i.uri, s.probabilities from scores s join images i on i.id = s.image_id",
    )
    tags: dict[str, set[str]] = {uri: set() for uri, _ in rows}
    for uri, tag in query(workspace, "select image_uri, tag from current_tags"):
        tags[uri].add(tag)
    return {uri: (tags[uri], json.loads(p) if isinstance(p, str) else list(p)) for uri, p in rows}


@pytest.mark.parametrize("fallback", [False, True])
def test_an_image_no_class_reaches_gets_its_top_class_only_with_the_fallback(
    request: pytest.FixtureRequest, isolated_mlc_environment: Path, fallback: bool
) -> None:
    scoring = {"batch_size": 4, "top_class_fallback": fallback}
    with open_backend(request, isolated_mlc_environment, "embedded", scoring=scoring) as workspace:
        champion = register_champion(workspace, thresholds=UNREACHABLE)
        put_tiny_images(workspace, IMAGES)

        score_images(workspace)
        scored = _tags_and_probabilities(workspace)
        retag_images(workspace)
        retagged = _tags_and_probabilities(workspace)

    assert len(scored) == IMAGES
    for tags, probabilities in scored.values():
        if fallback:
            top = max(range(5), key=lambda column: probabilities[column])
            assert tags == {champion.classes[top]}
        else:
            assert tags == set()
    # Re-tagging applies the same rule, so it changes nothing here.
    assert retagged == scored
