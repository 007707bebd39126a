"""`mlc labels set/clear/import` corrections, and what every bad input gets: one sentence, a
non-zero exit, nothing half-written. The bad inputs run through the real `mlc` command."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from mlc_core.jobs.workspace import Workspace
from tests.cli.conftest import invoke, run_mlc


def current_tags(workspace: Workspace, key: str) -> dict[str, str]:
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT tag, source FROM current_tags WHERE image_uri = :uri"),
            {"uri": workspace.store.uri(key)},
        )
        return {tag: source for tag, source in rows}


def labels(workspace: Workspace, key: str) -> dict[str, tuple[bool, bool]]:
    """tag -> (positive, complete)."""
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT tag, positive, complete FROM labels WHERE image_uri = :uri"),
            {"uri": workspace.store.uri(key)},
        )
        return {tag: (bool(positive), bool(complete)) for tag, positive, complete in rows}


def test_a_correction_wins_over_the_model_until_it_is_cleared(tagged: Workspace) -> None:
    assert current_tags(tagged, "images/a.jpg") == {"beach": "model", "dog": "model"}

    said = invoke("labels", "set", "images/a.jpg", "-dog", "+sky", "+beach")

    assert "added beach, sky; removed dog" in said
    assert current_tags(tagged, "images/a.jpg") == {"beach": "human", "sky": "human"}
    assert labels(tagged, "images/a.jpg") == {
        "beach": (True, False),
        "dog": (False, False),
        "sky": (True, False),
    }
    with tagged.engine.connect() as connection:
        [source] = connection.execute(
            text("SELECT DISTINCT source FROM labels WHERE image_uri = :uri"),
            {"uri": tagged.store.uri("images/a.jpg")},
        ).one()
    assert source.startswith("mlc labels set by ")

    assert "already so: sky" in invoke("labels", "set", "images/a.jpg", "+sky")
    assert "handed back to the model: dog" in invoke("labels", "clear", "images/a.jpg", "dog")
    assert current_tags(tagged, "images/a.jpg") == {
        "beach": "human",
        "dog": "model",
        "sky": "human",
    }
    invoke("labels", "clear", "images/a.jpg")
    assert current_tags(tagged, "images/a.jpg") == {"beach": "model", "dog": "model"}


def test_a_tag_no_model_knows_is_kept_with_a_note(tagged: Workspace) -> None:
    said = invoke("labels", "set", "images/a.jpg", "+zebra")

    assert "no model version can predict 'zebra' yet" in said
    assert current_tags(tagged, "images/a.jpg")["zebra"] == "human"
    # Now a label names it, so it can be asked for.
    assert [
        r["key"]
        for r in map(json.loads, invoke("tags", "--all", "zebra", "--format", "jsonl").splitlines())
    ] == ["images/a.jpg"]


def test_a_review_list_comes_back_through_labels_import(tagged: Workspace, tmp_path: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(invoke("review", "--format", "csv"))))
    assert [r["key"] for r in rows] == ["images/a.jpg", "images/sub/e.jpg"]
    rows[0]["remove"] = "dog"  # the person looked at a and said: no dog; e is left blank
    filled = tmp_path / "reviewed.csv"
    with filled.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    said = run_mlc("labels", "import", str(filled))

    assert said.returncode == 0, said.stderr
    assert "imported labels for 1 images" in said.stdout
    assert "1 corrections row(s) named no tag" in said.stdout
    assert labels(tagged, "images/a.jpg") == {"dog": (False, False)}
    after = list(csv.DictReader(io.StringIO(invoke("review", "--format", "csv"))))
    assert [r["key"] for r in after] == ["images/sub/e.jpg"]


def test_a_corrections_file_that_says_both_imports_nothing(
    tagged: Workspace, tmp_path: Path
) -> None:
    both = tmp_path / "both.csv"
    both.write_text("key,add,remove\nimages/a.jpg,sky,\nimages/b.jpg,dog,dog\n")

    said = run_mlc("labels", "import", str(both))

    assert said.returncode == 1
    assert "line 3: images/b.jpg: dog both present and absent" in said.stderr
    assert "nothing was imported" in said.stderr
    assert labels(tagged, "images/a.jpg") == {}


BAD_INPUTS = [
    (
        ["tags", "--all", "beech"],
        "no model version or label knows the tag 'beech'; close matches: beach",
    ),
    (["tags", "--all", "dog", "--model", "v9"], "there is no model version 'v9'"),
    (["tags", "--any", "dog", "--min-prob", "0.5"], "--min-prob applies to the --all tags"),
    (["tags", "--all", "dog", "--none", "dog"], "dog cannot be both wanted and excluded"),
    (["tags", "--band", "dog", "0.8", "0.2"], "the band's low end 0.8 is above its high end 0.2"),
    (
        ["tags", "--all", "dog", "--after", "images/a.jpeg"],
        "no image with the key 'images/a.jpeg' is in the database; did you mean images/a.jpg?",
    ),
    (
        ["show", "images/a.jpeg"],
        "no image with the key 'images/a.jpeg' is in the database; did you mean images/a.jpg?",
    ),
    (["show", "../etc/passwd"], "invalid object key"),
    (["labels", "set", "images/nope.jpg", "+dog"], "no image with the key 'images/nope.jpg'"),
    (["labels", "set", "images/a.jpg", "+dog", "-dog"], "dog cannot be both added and removed"),
    (
        ["labels", "set", "images/a.jpg", "dog"],
        "'dog': write +TAG to add a tag or -TAG to remove one",
    ),
    (["labels", "set", "images/a.jpg", "+b@d"], "has characters outside letters"),
    (["export", "--format", "parquet"], "parquet is a binary format; give --output FILE"),
    (["export", "--output", "/no/such/folder/x.csv"], "the folder /no/such/folder does not exist"),
    (["runs", "--kind", "nightly"], "unknown run kind 'nightly'"),
]


@pytest.mark.parametrize(
    ("args", "sentence"), BAD_INPUTS, ids=lambda v: " ".join(v)[:40] if isinstance(v, list) else ""
)
def test_bad_input_gets_one_sentence_and_a_failing_exit(
    tagged_embedded: Workspace, args: list[str], sentence: str
) -> None:
    tagged = tagged_embedded  # the messages do not depend on the backend
    before = labels(tagged, "images/a.jpg")

    said = run_mlc(*args)

    assert said.returncode == 1, (said.stdout, said.stderr)
    assert said.stderr.startswith("error: ") and sentence in said.stderr
    assert said.stderr.count("\n") == 1 and "Traceback" not in said.stderr
    assert said.stdout == ""
    assert labels(tagged, "images/a.jpg") == before


def test_a_probability_outside_zero_to_one_is_refused(tagged_embedded: Workspace) -> None:
    said = run_mlc("tags", "--all", "dog", "--min-prob", "1.5")

    assert said.returncode == 2
    assert "--min-prob" in said.stderr and "less than or equal to 1" in said.stderr


def test_an_export_that_cannot_be_written_leaves_the_old_file(
    tagged_embedded: Workspace, tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "tags.csv"
    target.write_text("the previous export\n")
    folder.chmod(0o500)  # the folder refuses the temporary file the export writes first
    try:
        said = run_mlc("export", "--output", str(target), drop_rights=True)
    finally:
        folder.chmod(0o700)

    assert said.returncode == 1
    assert said.stderr.startswith(f"error: cannot export to {target}")
    assert target.read_text() == "the previous export\n"
    assert [p.name for p in folder.iterdir()] == ["tags.csv"]
