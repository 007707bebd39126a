"""Real photos: the shared natural_scene set's own labels file, imported and trained on."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mlc_core.jobs.labels_import import import_labels
from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.training.train import train_model_version
from mlc_core.jobs.workspace import Workspace

SAMPLE = 80


@pytest.mark.needs_dataset
def test_natural_scene_labels_file_imports_and_trains_on_real_photos(
    workspace: Workspace, natural_scene_dir: Path
) -> None:
    with (natural_scene_dir / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    # Every 25th photo: the file is ordered by class, so a stride samples every class.
    sample = rows[::25][:SAMPLE]
    for row in sample:
        data = (natural_scene_dir / "images" / row["filename"]).read_bytes()
        workspace.store.put(f"images/natural/{row['filename']}", data)
    labels = "filename,tags\n" + "".join(f"{r['filename']},{r['tags']}\n" for r in sample)
    with workspace.transaction() as session:
        report = import_labels(
            session,
            workspace.store,
            labels.encode(),
            source="natural_scene",
            key_prefix="images/natural/",
        )
    assert report.imported_images == len(sample) and not report.problems

    trained = train_model_version(workspace, workspace.settings.training)
    assert set(trained.classes) <= {"desert", "mountains", "sea", "sunset", "trees"}
    assert len(trained.classes) >= 4
    scored = score_images(workspace)
    assert scored.scored == len(sample) and scored.failed == 0
