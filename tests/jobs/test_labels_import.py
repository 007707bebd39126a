from __future__ import annotations

import pytest

from mlc_core.db.labels import labels_by_image
from mlc_core.errors import LabelsFileError
from mlc_core.jobs.labels_import import import_labels
from mlc_core.jobs.workspace import Workspace


def _import(workspace: Workspace, data: bytes):
    with workspace.transaction() as session:
        return import_labels(session, workspace.store, data, source="test.csv")


def _labels(workspace: Workspace) -> dict[str, dict[str, bool]]:
    with workspace.transaction() as session:
        return labels_by_image(session)


@pytest.fixture
def three_images(workspace: Workspace) -> Workspace:
    for name in ("a.jpg", "b.jpg", "c d ü.jpg"):
        workspace.store.put(f"images/{name}", b"x")
    return workspace


def test_valid_rows_are_imported_as_positive_labels(three_images: Workspace) -> None:
    report = _import(
        three_images, b"key,tags\nimages/a.jpg,sea|Sunset\nimages/c d \xc3\xbc.jpg,trees\n"
    )
    assert report.imported_images == 2 and not report.problems
    labels = _labels(three_images)
    assert labels[three_images.store.uri("images/a.jpg")] == {"sea": True, "sunset": True}
    assert labels[three_images.store.uri("images/c d ü.jpg")] == {"trees": True}


def test_each_bad_row_gets_its_line_and_the_rest_are_imported(three_images: Workspace) -> None:
    data = (
        b"key,tags\n"
        b"images/a.jpg,sea\n"  # 2 ok
        b"images/missing.jpg,sea\n"  # 3 unknown key
        b"images/b.jpg,sea||trees\n"  # 4 empty tag
        b"images/a.jpg,trees\n"  # 5 duplicate
        b"images/b.jpg\n"  # 6 missing column
        b"images/b.jpg,s\xff\xfeea\n"  # 7 bad encoding
        b"../etc/passwd,sea\n"  # 8 escapes the root
        b"images/b.jpg,desert\n"  # 9 ok
    )
    report = _import(three_images, data)
    by_line = {problem.line: problem.kind for problem in report.problems}
    assert by_line == {
        3: "unknown_key",
        4: "bad_tag",
        5: "duplicate",
        6: "missing_column",
        7: "bad_encoding",
        8: "bad_key",
    }
    assert report.imported_images == 2
    assert report.problem_counts["duplicate"] == 1
    duplicate = next(problem for problem in report.problems if problem.kind == "duplicate")
    assert str(duplicate).startswith("line 5:") and "line 2" in str(duplicate)
    assert _labels(three_images)[three_images.store.uri("images/b.jpg")] == {"desert": True}


def test_a_header_without_the_tags_column_is_refused(three_images: Workspace) -> None:
    with pytest.raises(LabelsFileError, match="expected the columns key,tags"):
        _import(three_images, b"key,labels\nimages/a.jpg,sea\n")


def test_reimport_turns_a_dropped_tag_into_a_negative_label(three_images: Workspace) -> None:
    _import(three_images, b"key,tags\nimages/a.jpg,sea|trees\n")
    _import(three_images, b"key,tags,negative_tags\nimages/a.jpg,sea,desert\n")
    assert _labels(three_images)[three_images.store.uri("images/a.jpg")] == {
        "sea": True,
        "trees": False,
        "desert": False,
    }


def test_filename_column_and_key_prefix_accept_bare_file_names(three_images: Workspace) -> None:
    with three_images.transaction() as session:
        report = import_labels(
            session,
            three_images.store,
            b"filename,tags\na.jpg,sea\n",
            source="t",
            key_prefix="images/",
        )
    assert report.imported_images == 1


def test_a_stray_carriage_return_is_one_bad_row_and_not_half_a_row(three_images: Workspace) -> None:
    data = b"key,tags\nimages/a.jpg,sea|sun\rset\nimages/b.jpg,trees\n"

    report = _import(three_images, data)

    assert [(p.line, p.kind) for p in report.problems] == [(2, "stray_carriage_return")]
    labels = _labels(three_images)
    assert three_images.store.uri("images/a.jpg") not in labels
    assert labels[three_images.store.uri("images/b.jpg")] == {"trees": True}


def test_a_file_with_carriage_returns_only_is_read_line_by_line(three_images: Workspace) -> None:
    report = _import(three_images, b"key,tags\rimages/a.jpg,sea\rimages/b.jpg,trees\r")

    assert report.imported_images == 2 and not report.problems


def test_a_field_over_128_kib_is_one_bad_row(three_images: Workspace) -> None:
    huge = b"x" * (200 * 1024)
    data = b"key,tags\nimages/a.jpg," + huge + b"\nimages/b.jpg,trees\n"

    report = _import(three_images, data)

    assert [(p.line, p.kind) for p in report.problems] == [(2, "field_too_long")]
    assert report.imported_images == 1


def test_a_quoted_field_may_span_lines_and_later_rows_keep_their_line(
    three_images: Workspace,
) -> None:
    data = b'key,tags\nimages/a.jpg,"sea|\nsunset"\nimages/missing.jpg,trees\n'

    report = _import(three_images, data)

    assert _labels(three_images)[three_images.store.uri("images/a.jpg")] == {
        "sea": True,
        "sunset": True,
    }
    assert [(p.line, p.kind) for p in report.problems] == [(4, "unknown_key")]
