"""The README's SQL runs as written, on SQLite and PostgreSQL, and answers what it says."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from mlc_core.db.images import record_failures, register_images
from mlc_core.db.labels import LabelRecord, upsert_labels
from mlc_core.db.scores import ImageScore, write_scores
from tests.db.support import add_model_version, image

README = Path(__file__).resolve().parents[2] / "README.md"
CLASSES = ["sea", "sunset", "trees"]


def _readme_queries() -> dict[str, str]:
    """The README's query block: each statement by the comment line above it."""
    block = re.search(r"## Querying tags.*?```sql\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "the README's Querying tags section has no sql block"
    queries = {}
    for statement in block.group(1).split(";\n"):
        lines = statement.strip().splitlines()
        if lines:
            assert lines[0].startswith("-- "), statement
            queries[lines[0][3:]] = "\n".join(lines[1:])
    return queries


def _version(session: Session, name: str) -> int:
    return add_model_version(session, name, champion=True, classes=CLASSES).id


def _score(image_id: int, tags: dict[str, float]) -> ImageScore:
    probabilities = tuple(tags.get(name, 0.1) for name in CLASSES)
    return ImageScore(image_id, probabilities, tuple(tags.items()))


def _fill(engine: Engine) -> dict[str, int]:
    with Session(engine) as session, session.begin():
        ids = register_images(session, [image(f"s3://b/{n}.jpg") for n in range(5)])
        a, b, c, d, e = (ids[(f"s3://b/{n}.jpg", "e1")] for n in range(5))
        v1 = _version(session, "v1")
        write_scores(
            session,
            v1,
            None,
            [
                _score(a, {"sea": 0.9, "sunset": 0.8}),
                _score(b, {"sea": 0.7}),
                _score(c, {"trees": 0.6}),
                _score(d, {"sea": 0.9}),
            ],
        )
        v2 = _version(session, "v2")
        # v2 scores a, b, c (d only v1 saw; e only v2): on those, sunset moves from a to b,
        # trees is lost on c and sea gained there.
        write_scores(
            session,
            v2,
            None,
            [
                _score(a, {"sea": 0.9}),
                _score(b, {"sea": 0.8, "sunset": 0.7}),
                _score(c, {"sea": 0.6}),
                _score(e, {"trees": 0.9, "sunset": 0.9}),
            ],
        )
        upsert_labels(session, [LabelRecord("s3://b/3.jpg", "sunset", True, "person", False)])
        upsert_labels(session, [LabelRecord("s3://b/1.jpg", "sea", False, "person", False)])
        record_failures(session, [(c, "could not decode")])
    return {"a": a, "b": b, "c": c, "d": d, "e": e}


def test_every_readme_query_runs_and_the_main_ones_answer_right(migrated_engine: Engine) -> None:
    _fill(migrated_engine)
    queries = _readme_queries()
    assert len(queries) >= 6
    with Session(migrated_engine) as session:
        answers = {name: session.execute(text(sql)).all() for name, sql in queries.items()}

    both = answers[
        "images with all of these tags (first page; image_id is the order mlc first saw them)"
    ]
    # a: v2 shows sea only; b: the label removed sea; d: v1's sea plus the person's sunset.
    assert [row[0] for row in both] == ["s3://b/3.jpg"]
    counts = dict(answers["how many images carry each tag"])
    assert counts == {"sea": 2, "sunset": 3, "trees": 1}
    corrected = answers[
        "what people corrected, newest first (positive: added or confirmed; false: removed)"
    ]
    assert {(row[0], row[1], bool(row[2])) for row in corrected} == {
        ("s3://b/3.jpg", "sunset", True),
        ("s3://b/1.jpg", "sea", False),
    }
    changed = answers["what changed between two model versions, per tag, on the images both scored"]
    assert sorted(tuple(row) for row in changed) == [
        ("sea", 1, 0),
        ("sunset", 1, 1),
        ("trees", 0, 1),
    ]
    failed = answers["what failed, and why"]
    assert [(row[0], row[1]) for row in failed] == [("s3://b/2.jpg", "could not decode")]
