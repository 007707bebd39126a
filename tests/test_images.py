"""Tests for mlc_core.images: sniffing, validation and decoding to model input."""

from __future__ import annotations

import io
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from mlc_core.errors import ImageDecodeError
from mlc_core.images import (
    IMAGE_EXTENSIONS,
    decode_image,
    has_image_extension,
    sniff_image_format,
)
from mlc_core.settings import PILLOW_DEFAULT_MAX_PIXELS
from tests import imagefactory
from tests.imagefactory import (
    BAD_IMAGES,
    BLUE,
    GOOD_ODD_IMAGES,
    GREEN,
    MID_GREY_16_BIT,
    RED,
    encode,
    halves,
    jpeg,
    png,
    solid,
)

SIZE = 32
WHITE = (255, 255, 255)
MID_GREY = (128, 128, 128)
# JPEG and lossy WebP move colours a little; the checks are about the right colour, not the
# codec's rounding.
LOSSY_TOLERANCE = 6

# Key words a person needs in each bad image's reason.
BAD_IMAGE_REASON_WORDS: dict[str, list[str]] = {
    "zero_bytes": ["empty", "0 bytes"],
    "truncated_jpeg": ["truncated", "JPEG"],
    "png_bad_header_crc": ["corrupt", "PNG", "checksum"],
    "png_garbled_pixel_data": ["corrupt", "PNG"],
    "text_named_jpg": ["not an image", "text", "this is a note"],
    "html_error_page": ["not an image", "HTML page"],
    "unknown_binary": ["not an image", "unrecognised", "0xc8c9"],
    "decompression_bomb_png": [
        "20000x20000",
        "400.0 megapixels",
        "above the limit of 89.5 megapixels",
        "MLC_SCORING__MAX_IMAGE_PIXELS",
    ],
    "decompression_bomb_webp": ["16383x16383", "above the limit", "MAX_IMAGE_PIXELS"],
    "tracking_pixel_1x1": ["1x1 pixels", "smaller than the 8-pixel minimum side"],
    "truncated_heic": ["corrupt", "HEIF"],
    "mp4_video_named_jpg": ["not an image", "video", "mp42"],
}

# The colour every pixel of each good odd image must have, where the image is one colour.
GOOD_ODD_IMAGE_COLOURS: dict[str, tuple[int, int, int] | None] = {
    "long_20000x64_jpeg": GREEN,
    "cmyk_jpeg": (255, 0, 0),
    "grey_16_bit_png": MID_GREY,
    "palette_png_with_transparency": None,
    "animated_gif": RED,
    "animated_webp": RED,
    "animated_png": RED,
    "webp": BLUE,
    "tiff": BLUE,
    "bmp": BLUE,
    "heic": BLUE,
    "avif": BLUE,
    "exif_rotated_jpeg": None,
    "grayscale_jpeg": (100, 100, 100),
    "rgba_png_transparent_left_half": None,
}


def assert_all_pixels(array: np.ndarray, colour: tuple[int, int, int], tolerance: int) -> None:
    difference = np.abs(array.astype(int) - np.array(colour)).max()
    assert difference <= tolerance, f"pixels differ from {colour} by up to {difference}"


def reason_of(data: bytes, **options: int) -> str:
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data, SIZE, **options)
    return caught.value.reason


@pytest.mark.parametrize("name", sorted(GOOD_ODD_IMAGES))
def test_each_good_odd_image_decodes_to_a_square_rgb_uint8_array(name: str) -> None:
    array = decode_image(GOOD_ODD_IMAGES[name], SIZE)

    assert array.shape == (SIZE, SIZE, 3)
    assert array.dtype == np.uint8


@pytest.mark.parametrize(
    "name", sorted(name for name, colour in GOOD_ODD_IMAGE_COLOURS.items() if colour)
)
def test_each_one_colour_good_odd_image_keeps_its_colour(name: str) -> None:
    colour = GOOD_ODD_IMAGE_COLOURS[name]
    assert colour is not None

    assert_all_pixels(decode_image(GOOD_ODD_IMAGES[name], SIZE), colour, LOSSY_TOLERANCE)


def test_every_good_odd_image_has_an_expected_colour_entry() -> None:
    assert set(GOOD_ODD_IMAGE_COLOURS) == set(GOOD_ODD_IMAGES)


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_each_bad_image_raises_image_decode_error_with_a_readable_reason(name: str) -> None:
    reason = reason_of(BAD_IMAGES[name])

    for word in BAD_IMAGE_REASON_WORDS[name]:
        assert word in reason


def test_the_reason_is_also_the_error_message() -> None:
    with pytest.raises(ImageDecodeError, match=r"^empty file \(0 bytes\)$"):
        decode_image(b"", SIZE)


def test_sixteen_bit_mid_grey_comes_out_mid_grey_not_white() -> None:
    array = decode_image(png(48, 48, MID_GREY_16_BIT, "I;16"), SIZE)

    assert_all_pixels(array, MID_GREY, tolerance=0)


def test_exif_orientation_is_applied() -> None:
    # Stored red above blue; turned 90 degrees clockwise, red is on the right.
    array = decode_image(GOOD_ODD_IMAGES["exif_rotated_jpeg"], SIZE)

    assert_all_pixels(array[:, :4], BLUE, LOSSY_TOLERANCE)
    assert_all_pixels(array[:, -4:], RED, LOSSY_TOLERANCE)


@pytest.mark.parametrize("name", ["animated_gif", "animated_webp", "animated_png"])
def test_animations_decode_their_first_frame(name: str) -> None:
    array = decode_image(GOOD_ODD_IMAGES[name], SIZE)

    assert_all_pixels(array, RED, LOSSY_TOLERANCE)


@pytest.mark.parametrize(
    "name", ["rgba_png_transparent_left_half", "palette_png_with_transparency"]
)
def test_transparent_pixels_are_composited_over_white_not_black(name: str) -> None:
    array = decode_image(GOOD_ODD_IMAGES[name], SIZE)

    assert_all_pixels(array[:, :4], WHITE, tolerance=0)


def test_cmyk_jpeg_with_adobe_inverted_channels_is_not_inverted() -> None:
    data = GOOD_ODD_IMAGES["cmyk_jpeg"]
    with Image.open(io.BytesIO(data)) as stored:
        assert stored.mode == "CMYK"
        assert "adobe" in stored.info

    assert_all_pixels(decode_image(data, SIZE), (255, 0, 0), LOSSY_TOLERANCE)


def _ycbcr_tiff() -> bytes:
    return encode(solid(16, 16, RED).convert("YCbCr"), "TIFF")


def _rgb_png_with_transparent_colour() -> bytes:
    return encode(halves(16, 16, RED, BLUE), "PNG", transparency=RED)


@pytest.mark.parametrize(
    ("mode", "make", "colour"),
    [
        ("1", lambda: png(16, 16, 1, "1"), WHITE),
        ("L", lambda: png(16, 16, 100, "L"), (100, 100, 100)),
        ("LA opaque", lambda: png(16, 16, (100, 255), "LA"), (100, 100, 100)),
        ("LA transparent", lambda: png(16, 16, (100, 0), "LA"), WHITE),
        ("P", lambda: encode(solid(16, 16, RED).quantize(2), "GIF"), RED),
        ("RGBA", lambda: png(16, 16, (*GREEN, 255), "RGBA"), GREEN),
        (
            "CMYK",
            lambda: encode(solid(16, 16, (0, 255, 255, 0), "CMYK"), "TIFF"),
            (255, 0, 0),
        ),
        ("I;16", lambda: png(16, 16, MID_GREY_16_BIT, "I;16"), MID_GREY),
        (
            "I;16B",
            lambda: encode(solid(16, 16, MID_GREY_16_BIT, "I;16B"), "TIFF"),
            MID_GREY,
        ),
        ("I", lambda: encode(solid(16, 16, MID_GREY_16_BIT, "I"), "TIFF"), MID_GREY),
        ("F in 0-1", lambda: encode(solid(16, 16, 0.5, "F"), "TIFF"), MID_GREY),
        ("F in 0-255", lambda: encode(solid(16, 16, 128.0, "F"), "TIFF"), MID_GREY),
        ("YCbCr", _ycbcr_tiff, RED),
    ],
)
def test_each_colour_mode_becomes_the_right_rgb(
    mode: str, make: Callable[[], bytes], colour: tuple[int, int, int]
) -> None:
    assert_all_pixels(decode_image(make(), SIZE), colour, tolerance=2)


def test_rgb_png_with_a_transparent_colour_shows_white_there() -> None:
    array = decode_image(_rgb_png_with_transparent_colour(), SIZE)

    assert_all_pixels(array[:, :4], WHITE, tolerance=0)
    assert_all_pixels(array[:, -4:], BLUE, tolerance=0)


def test_long_20000x300_jpeg_under_the_pixel_limit_decodes() -> None:
    array = decode_image(jpeg(20_000, 300, GREEN), 128)

    assert array.shape == (128, 128, 3)
    assert_all_pixels(array, GREEN, LOSSY_TOLERANCE)


def test_large_jpeg_decodes_at_reduced_scale_to_the_same_colour() -> None:
    array = decode_image(jpeg(2000, 1500, BLUE), 128)

    assert_all_pixels(array, BLUE, LOSSY_TOLERANCE)


def test_squashing_keeps_the_edges_of_a_wide_image_in_view() -> None:
    wide = solid(300, 100, GREEN)
    wide.paste(RED, (0, 0, 20, 100))
    wide.paste(BLUE, (280, 0, 300, 100))

    array = decode_image(encode(wide, "PNG"), SIZE)

    assert_all_pixels(array[:, :1], RED, tolerance=2)
    assert_all_pixels(array[:, -1:], BLUE, tolerance=2)


def test_small_images_are_scaled_up_to_the_requested_size() -> None:
    array = decode_image(png(8, 8, RED), 64)

    assert array.shape == (64, 64, 3)
    assert_all_pixels(array, RED, tolerance=0)


def test_pixel_limit_refuses_an_image_with_more_pixels_than_max_pixels() -> None:
    reason = reason_of(png(64, 48), max_pixels=3071)

    assert reason == (
        "image is 64x48 (3,072 pixels), above the limit of 3,071 pixels "
        "(MLC_SCORING__MAX_IMAGE_PIXELS)"
    )


def test_image_with_exactly_max_pixels_decodes() -> None:
    assert decode_image(png(64, 48), SIZE, max_pixels=64 * 48).shape == (SIZE, SIZE, 3)


def test_pixel_limit_is_checked_before_pixel_data_is_decoded() -> None:
    # Only four rows of data follow the header: decoding would have failed as truncated.
    reason = reason_of(imagefactory.png_declaring(4000, 4000), max_pixels=1_000_000)

    assert "4000x4000" in reason
    assert "above the limit" in reason


def test_raising_max_pixels_above_pillows_own_limit_is_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for data in (jpeg(64, 48), png(64, 48)):
            assert decode_image(data, SIZE, max_pixels=10_000).shape == (SIZE, SIZE, 3)


def test_decoding_leaves_pillows_global_pixel_limit_alone() -> None:
    before = Image.MAX_IMAGE_PIXELS

    reason_of(BAD_IMAGES["decompression_bomb_png"])
    decode_image(jpeg(), SIZE)

    assert before == Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_MAX_PIXELS


def test_image_with_a_side_shorter_than_min_side_is_refused() -> None:
    reason = reason_of(png(7, 40), min_side=8)

    assert reason == "image is 7x40 pixels, smaller than the 8-pixel minimum side"


def test_image_with_sides_exactly_min_side_decodes() -> None:
    assert decode_image(png(8, 8), SIZE, min_side=8).shape == (SIZE, SIZE, 3)


def test_truncated_png_is_a_failure_not_a_partial_image() -> None:
    whole = encode(imagefactory.textured(128, 128), "PNG")

    reason = reason_of(whole[: len(whole) * 2 // 3])

    assert "truncated or corrupt PNG" in reason


def test_image_that_ends_early_in_its_header_is_refused() -> None:
    assert "truncated or corrupt JPEG" in reason_of(jpeg()[:40])


def test_svg_is_named_as_a_drawing_mlc_does_not_decode() -> None:
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>'

    assert "SVG drawing" in reason_of(svg)


def test_same_bytes_always_decode_to_the_same_array() -> None:
    data = GOOD_ODD_IMAGES["exif_rotated_jpeg"]

    first = decode_image(data, SIZE)
    second = decode_image(data, SIZE)

    assert np.array_equal(first, second)


def test_decoding_in_several_threads_gives_the_same_arrays_as_one_thread() -> None:
    images = list(GOOD_ODD_IMAGES.values()) * 4
    expected = [decode_image(data, SIZE) for data in images]

    with ThreadPoolExecutor(max_workers=4) as pool:
        decoded = list(pool.map(lambda data: decode_image(data, SIZE), images))

    assert all(np.array_equal(a, b) for a, b in zip(decoded, expected, strict=True))


def test_decoded_array_belongs_to_the_caller() -> None:
    array = decode_image(jpeg(), SIZE)

    array[0, 0] = 0

    assert array.flags.writeable


@pytest.mark.parametrize("size", [0, -1])
def test_non_positive_size_is_a_programming_error(size: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        decode_image(jpeg(), size)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("grayscale_jpeg", "jpeg"),
        ("rgba_png_transparent_left_half", "png"),
        ("animated_gif", "gif"),
        ("webp", "webp"),
        ("tiff", "tiff"),
        ("bmp", "bmp"),
    ],
)
def test_sniff_recognises_each_format_by_its_magic_bytes(name: str, expected: str) -> None:
    assert sniff_image_format(GOOD_ODD_IMAGES[name][:32]) == expected


def test_sniff_recognises_big_endian_tiff() -> None:
    data = encode(solid(8, 8, MID_GREY_16_BIT, "I;16B"), "TIFF")

    assert data.startswith(b"MM")
    assert sniff_image_format(data) == "tiff"


@pytest.mark.parametrize(
    "name", ["zero_bytes", "html_error_page", "text_named_jpg", "unknown_binary"]
)
def test_sniff_returns_none_for_content_that_is_not_an_image(name: str) -> None:
    assert sniff_image_format(BAD_IMAGES[name]) is None


def test_sniff_does_not_take_text_starting_with_bm_for_a_bitmap() -> None:
    assert sniff_image_format(b"BMW service record, 2019, mileage 42000") is None


@pytest.mark.parametrize(
    "key", ["a/photo.jpg", "a/photo.JPEG", "b.Png", "c.gif", "d.webp", "e.TIF", "f.tiff", "g.bmp"]
)
def test_image_extensions_are_recognised_in_any_case(key: str) -> None:
    assert has_image_extension(key)


@pytest.mark.parametrize(
    "key", ["notes.txt", "photo.jpg.json", "folder.jpg/readme", "jpg", "images/", "photo."]
)
def test_other_keys_have_no_image_extension(key: str) -> None:
    assert not has_image_extension(key)


def test_image_extensions_are_lower_case_with_a_dot() -> None:
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)


def test_a_heic_photo_without_its_plugin_names_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As on a machine where pillow-heif is not installed.
    monkeypatch.setitem(sys.modules, "pillow_heif.as_plugin", None)

    reason = reason_of(GOOD_ODD_IMAGES["heic"])

    assert "HEIF" in reason and "pip install pillow-heif" in reason
