"""Bad input never stops a run: every good image is scored, every bad one is recorded with a
reason a person can read, and the run finishes with its counts. Odd keys, objects deleted
between listing and reading, and a configurable pixel limit too."""

from __future__ import annotations

import dataclasses

import pytest

from mlc_core.images import sniff_image_format
from mlc_core.jobs.scoring import ScoreReport, score_images
from mlc_core.jobs.scoring.discovery import discover_images
from mlc_core.jobs.workspace import Workspace
from tests.imagefactory import BAD_IMAGES, GOOD_ODD_IMAGES
from tests.jobs.scoring_support import (
    put_tiny_images,
    query,
    register_champion,
    tiny_jpeg,
)

SCORING = {"batch_size": 4, "read_workers": 4}
EXTENSIONS = {
    "jpeg": "jpg",
    "png": "png",
    "gif": "gif",
    "webp": "webp",
    "tiff": "tif",
    "bmp": "bmp",
    "heif": "heic",
    "avif": "avif",
}
# What each bad file's recorded reason must say, by file.
BAD_FILES = {
    "zero_bytes.jpg": "empty file (0 bytes)",
    "truncated_jpeg.jpg": "truncated or corrupt JPEG: image file is truncated",
    "png_bad_header_crc.png": "truncated or corrupt PNG: broken PNG file",
    "png_garbled_pixel_data.png": "truncated or corrupt PNG",
    "text_named_jpg.jpg": "not an image: the file looks like text",
    "html_error_page.jpg": "not an image: the file starts like an HTML page",
    "unknown_binary.jpg": "not an image: unrecognised content",
    "decompression_bomb_png.png": "image is 20000x20000 (400.0 megapixels), above the limit",
    "decompression_bomb_webp.webp": "image is 16383x16383 (268.4 megapixels), above the limit",
    "tracking_pixel_1x1.gif": "image is 1x1 pixels, smaller than the 8-pixel minimum side",
    "truncated_heic.heic": "truncated or corrupt HEIF",
    "mp4_video_named_jpg.jpg": "not an image: the file looks like a video",
}
ODD_KEYS = ["images/with space/a photo (1).jpg", "images/ünïcødé/写真 — été.JPG"]


@pytest.fixture
def workspace(each_backend: Workspace) -> Workspace:
    return each_backend


def _good_key(name: str, data: bytes) -> str:
    kind = sniff_image_format(data[:32])
    assert kind is not None
    return f"images/odd/{name}.{EXTENSIONS[kind]}"


def _put_every_kind_of_input(workspace: Workspace) -> dict[str, str]:
    """Store every bad and odd file; returns key -> the reason it must fail with ('' = good)."""
    expected: dict[str, str] = {}
    for name, data in GOOD_ODD_IMAGES.items():
        key = _good_key(name, data)
        workspace.store.put(key, data)
        expected[key] = ""
    for index, key in enumerate(ODD_KEYS):
        workspace.store.put(key, tiny_jpeg(index))
        expected[key] = ""
    for file_name, reason in BAD_FILES.items():
        workspace.store.put(f"images/bad/{file_name}", BAD_IMAGES[file_name.rsplit(".", 1)[0]])
        expected[f"images/bad/{file_name}"] = reason
    return expected


def test_every_good_image_is_scored_and_every_bad_one_recorded_with_its_reason(
    workspace: Workspace,
) -> None:
    register_champion(workspace)
    expected = _put_every_kind_of_input(workspace)
    good = {workspace.store.uri(key) for key, reason in expected.items() if not reason}

    report = score_images(workspace)

    assert (report.scored, report.failed, report.skipped) == (len(good), len(BAD_FILES), {})
    scored = query(
        workspace,
        "select images.uri from images join scores on scores.image_id = images.id "
        "where images.status = 'scored'",
    )
    assert {uri for (uri,) in scored} == good
    failures = dict(query(workspace, "select image_uri, error from scoring_failures"))
    assert set(failures) == {workspace.store.uri(key) for key, reason in expected.items() if reason}
    for key, reason in expected.items():
        if reason:
            assert failures[workspace.store.uri(key)].startswith(reason), key
    assert sum(report.failed_by_reason.values()) == len(BAD_FILES)
    assert query(workspace, "select status from runs where id = :id", id=report.run_id) == [
        ("succeeded",)
    ]


def test_an_object_deleted_between_listing_and_reading_is_retired_by_the_read(
    workspace: Workspace,
) -> None:
    register_champion(workspace)
    keys = put_tiny_images(workspace, 4)
    # The listing (discovery) sees the object; it is gone by the time scoring reads it.
    discover_images(workspace, ["images/"], ScoreReport("v1", "new", ["images/"]))
    workspace.store.delete(keys[0])

    report = score_images(workspace, discover=False)

    assert (report.scored, report.failed, report.retired) == (3, 0, 1)
    assert query(workspace, "select count(*) from scoring_failures") == [(0,)]
    [(status, retired_at)] = query(
        workspace,
        "select status, retired_at from images where uri = :uri",
        uri=workspace.store.uri(keys[0]),
    )
    # Retired, not failed, and its row is kept.
    assert status == "new" and retired_at is not None
    assert query(workspace, "select count(*) from score_claims") == [(0,)]


def test_the_pixel_limit_is_a_setting(workspace: Workspace) -> None:
    register_champion(workspace)
    workspace.store.put("images/large.jpg", tiny_jpeg(1, side=64))
    workspace.store.put("images/small.jpg", tiny_jpeg(2, side=32))
    scoring = workspace.settings.scoring.model_copy(update={"max_image_pixels": 2000})
    limited = dataclasses.replace(
        workspace, settings=workspace.settings.model_copy(update={"scoring": scoring})
    )

    report = score_images(limited)

    assert (report.scored, report.failed) == (1, 1)
    [(error,)] = query(workspace, "select error from scoring_failures")
    assert error == (
        "image is 64x64 (4,096 pixels), above the limit of 2,000 pixels "
        "(MLC_SCORING__MAX_IMAGE_PIXELS)"
    )
