"""`mlc tags`, `mlc show`, `mlc review`, `mlc export`, `mlc runs`, `mlc failures` on the known
workspace (tests/cli/conftest.py), on SQLite and PostgreSQL: what the command prints is what the
views answer."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import text

from mlc_core.db.images import record_failures
from mlc_core.db.models import Image
from mlc_core.db.runs import finish_run, start_run
from mlc_core.jobs.workspace import Workspace
from tests.cli.conftest import CHAMPION_SCORES, invoke


def view_keys(workspace: Workspace, sql: str) -> list[str]:
    root = workspace.store.root_uri
    with workspace.engine.connect() as connection:
        uris = [row[0] for row in connection.execute(text(sql), {"root": root})]
    return [uri[len(root) :] for uri in uris]


def jsonl(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


QUESTIONS = [
    (
        ["--all", "beach"],
        "SELECT DISTINCT image_uri FROM current_tags WHERE tag = 'beach' ORDER BY image_uri",
    ),
    (
        ["--tag", "beach", "--tag", "dog"],
        "SELECT image_uri FROM current_tags WHERE tag IN ('beach', 'dog') "
        "GROUP BY image_uri HAVING COUNT(*) = 2 ORDER BY image_uri",
    ),
    (
        ["--any", "sky", "--any", "dog", "--none", "beach"],
        "SELECT DISTINCT image_uri FROM current_tags WHERE tag IN ('sky', 'dog') AND image_uri "
        "NOT IN (SELECT image_uri FROM current_tags WHERE tag = 'beach') ORDER BY image_uri",
    ),
    (
        ["--all", "dog", "--min-prob", "0.7"],
        "SELECT image_uri FROM current_tags WHERE tag = 'dog' "
        "AND (probability >= 0.7 OR source = 'human') ORDER BY image_uri",
    ),
    (
        ["--all", "sky", "--prefix", "images/sub/"],
        "SELECT image_uri FROM current_tags WHERE tag = 'sky' "
        "AND image_uri LIKE :root || 'images/sub/%' ORDER BY image_uri",
    ),
    (
        [
            "--any",
            "beach",
            "--any",
            "dog",
            "--any",
            "sky",
            "--after",
            "images/b.jpg",
            "--limit",
            "2",
        ],
        "SELECT DISTINCT image_uri FROM current_tags WHERE image_uri > :root || 'images/b.jpg' "
        "ORDER BY image_uri LIMIT 2",
    ),
    (
        ["--band", "sky", "0.4", "0.6"],
        "SELECT image_uri FROM current_scores WHERE class_name = 'sky' "
        "AND probability BETWEEN 0.4 AND 0.6 ORDER BY image_uri",
    ),
    (
        ["--all", "sky", "--model", "v2"],
        "SELECT images.uri FROM image_tags JOIN images ON images.id = image_tags.image_id "
        "JOIN model_versions ON model_versions.id = image_tags.model_version_id "
        "WHERE model_versions.version = 'v2' AND image_tags.tag = 'sky' ORDER BY images.uri",
    ),
]


@pytest.mark.parametrize(
    ("options", "sql"),
    QUESTIONS,
    ids=["all", "tag-alias", "any-none", "min-prob", "prefix", "page", "band", "model"],
)
def test_mlc_tags_answers_as_the_views_do_in_every_format(
    tagged: Workspace, options: list[str], sql: str
) -> None:
    expected = view_keys(tagged, sql)
    assert expected

    as_jsonl = jsonl(invoke("tags", *options, "--format", "jsonl"))
    as_csv = list(csv.DictReader(io.StringIO(invoke("tags", *options, "--format", "csv"))))
    table = invoke("tags", *options)

    assert [row["key"] for row in as_jsonl] == expected
    assert list(dict.fromkeys(row["key"] for row in as_csv)) == expected
    table_keys = [line.split()[0] for line in table.splitlines()[3:] if line.startswith("images/")]
    assert table_keys == expected
    assert all(row["uri"] == tagged.store.uri(row["key"]) for row in as_jsonl)  # type: ignore[arg-type]


def test_tags_carry_probability_source_and_version(tagged: Workspace) -> None:
    [c] = jsonl(invoke("tags", "--all", "sky", "--prefix", "images/c", "--format", "jsonl"))
    [d] = jsonl(invoke("tags", "--all", "dog", "--prefix", "images/d", "--format", "jsonl"))

    assert c == {
        "key": "images/c.jpg",
        "uri": tagged.store.uri("images/c.jpg"),
        "model_version": "v1",
        "tags": [
            {"tag": "sky", "probability": 0.55, "source": "human"},
            {"tag": "dog", "probability": 0.9, "source": "model"},
        ],
    }
    assert d["tags"] == [{"tag": "dog", "probability": None, "source": "human"}]
    table = invoke("tags", "--all", "dog")
    assert re.search(r"images/d\.jpg\s+dog \(person\)\s+v1\n", table)
    assert "file://" not in table and "s3://" not in table


def test_show_lists_every_class_beside_its_threshold_with_labels(tagged: Workspace) -> None:
    shown = invoke("show", "images/b.jpg")
    detail = json.loads(invoke("show", "images/b.jpg", "--format", "json"))

    assert "scored by v1" in shown
    assert re.search(r"beach\s+0\.700\s+0\.500\n", shown)  # removed by a person: no tag
    assert "tags: sky 0.80" in shown
    assert re.search(r"beach\s+absent\s+test", shown)
    assert [s["probability"] for s in detail["scores"]] == list(CHAMPION_SCORES["images/b.jpg"])
    assert [t["tag"] for t in detail["tags"]] == ["sky"]


def test_show_says_why_an_image_failed(tagged: Workspace) -> None:
    with tagged.transaction() as session:
        image_id = session.query(Image.id).filter(Image.uri.endswith("a.jpg")).scalar()
        record_failures(session, [(image_id, "truncated or corrupt JPEG: image file is truncated")])

    shown = invoke("show", "images/a.jpg")

    assert "failed" in shown and "truncated or corrupt JPEG" in shown
    assert "no model version that people see has scored it" in shown
    failures = invoke("failures", "--reason", "CORRUPT")
    assert "images/a.jpg" in failures
    assert re.search(r"truncated or corrupt JPEG\s+1\n", failures)
    assert "images/a.jpg" not in invoke("failures", "--reason", "permission")


def test_review_lists_the_least_certain_unlabelled_images_first(tagged: Workspace) -> None:
    rows = list(csv.DictReader(io.StringIO(invoke("review", "--n", "10", "--format", "csv"))))
    sky = list(csv.DictReader(io.StringIO(invoke("review", "--tag", "sky", "--format", "csv"))))

    # Distances to 0.5: a 0.1 (dog 0.6), e 0.45; b, c and d carry labels and are skipped.
    assert [(r["key"], r["class"]) for r in rows] == [
        ("images/a.jpg", "dog"),
        ("images/sub/e.jpg", "beach"),
    ]
    assert all(r["add"] == "" and r["remove"] == "" for r in rows)
    # For one tag only a label on that tag counts: b and d (labelled beach, dog) are in.
    assert [r["key"] for r in sky] == [
        "images/d.jpg",
        "images/b.jpg",
        "images/a.jpg",
        "images/sub/e.jpg",
    ]


def test_export_round_trips_in_every_format(tagged: Workspace, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    for export_format in ("parquet", "csv", "jsonl"):
        invoke(
            "export", "--format", export_format, "--output", str(tmp_path / f"x.{export_format}")
        )
    parquet = pq.read_table(tmp_path / "x.parquet").to_pylist()
    as_csv = list(csv.DictReader((tmp_path / "x.csv").open()))
    as_jsonl = jsonl((tmp_path / "x.jsonl").read_text())

    keys = sorted(CHAMPION_SCORES)
    assert sorted(r["key"] for r in parquet) == sorted(r["key"] for r in as_csv) == keys
    assert sorted(r["key"] for r in as_jsonl) == keys
    by_key = {r["key"]: r for r in parquet}
    assert by_key["images/b.jpg"]["tags"] == ["sky"] and by_key["images/b.jpg"]["p_beach"] == 0.7
    assert by_key["images/d.jpg"]["human_tags"] == ["dog"]
    assert by_key["images/d.jpg"]["scored_at"].tzinfo is not None
    csv_b = next(r for r in as_csv if r["key"] == "images/b.jpg")
    assert (csv_b["tags"], float(csv_b["p_sky"]), csv_b["model_version"]) == ("sky", 0.8, "v1")
    json_c = next(r for r in as_jsonl if r["key"] == "images/c.jpg")
    assert json_c["probabilities"] == {"beach": 0.1, "dog": 0.9, "sky": 0.55}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_runs_lists_the_history_with_counts(tagged: Workspace) -> None:
    with tagged.transaction() as session:
        run = start_run(session, "score", {"mode": "new"})
        finish_run(
            session,
            run,
            status="succeeded",
            counts={"scored": 12, "failed": 1, "images_per_second": 40.5, "seconds": 0.3},
        )

    listed = invoke("runs")

    assert "score  succeeded" in listed and "12 scored, 1 failed, 40.5 images/s" in listed
