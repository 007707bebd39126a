"""Decode, validate, orient and resize images: the one place in mlc that touches Pillow.

Training and scoring both turn bytes into model input with :func:`decode_image`, so the two
cannot drift apart. Everything that makes bytes unusable (not an image, too large, too small,
truncated, corrupt) becomes an :class:`~mlc_core.errors.ImageDecodeError` whose ``reason`` a
person can read; no Pillow exception leaves this module.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from PIL import (
    AvifImagePlugin,
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from mlc_core.errors import ImageDecodeError
from mlc_core.settings import PILLOW_DEFAULT_MAX_PIXELS

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".heic", ".heif", ".avif"}
)
MAX_PIXELS_SETTING = "MLC_SCORING__MAX_IMAGE_PIXELS"

# Pillow's image classes for each format we accept. We build the image with the class of the
# sniffed format instead of calling ``Image.open``: Pillow then never tries the other plugins
# (some of which, like EPS, run external programs), and ``Image.open``'s own decompression-bomb
# check, which reads the process-wide ``Image.MAX_IMAGE_PIXELS`` and warns through the global
# warnings filters, does not run. Our ``max_pixels`` is then the limit, with no global state
# touched; ``warnings.catch_warnings`` would not do, as it is not thread-safe and scoring
# decodes in a thread pool.
_IMAGE_CLASSES: dict[str, Callable[[io.BytesIO], ImageFile.ImageFile]] = {
    "jpeg": JpegImagePlugin.JpegImageFile,
    "png": PngImagePlugin.PngImageFile,
    "gif": GifImagePlugin.GifImageFile,
    "webp": WebPImagePlugin.WebPImageFile,
    "tiff": TiffImagePlugin.TiffImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
    "avif": AvifImagePlugin.AvifImageFile,
}
# ISO media brands (the ftyp box) of still HEIF/HEIC and AVIF images.
_HEIF_BRANDS = frozenset({"heic", "heix", "heim", "heis", "hevc", "hevx"})
_AVIF_BRANDS = frozenset({"avif", "avis"})
# BMP info-header sizes (core, v1 to v5 and the OS/2 and Adobe variants). "BM" alone is too
# weak a signature: a text file starting with "BM" is not a bitmap.
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_WHITE = (255, 255, 255)
_SIXTEEN_BIT_MAX = 65535
# Bicubic is sharp enough for downscaling photographs and smooth when upscaling small images.
_RESAMPLE = Image.Resampling.BICUBIC
# Pillow first shrinks by a whole factor (cheap box reduction) while the image stays at least
# this many times the target size, then resamples; at 3.0 the result is indistinguishable from
# a full resample (Pillow's documentation), at a fraction of the cost for large images.
_REDUCING_GAP = 3.0
_TEXT_SNIPPET_CHARS = 40
_Decoded = TypeVar("_Decoded")


def has_image_extension(key: str) -> bool:
    """Return whether ``key`` ends with one of :data:`IMAGE_EXTENSIONS`, ignoring case."""
    _, dot, extension = key.rpartition(".")
    return bool(dot) and "/" not in extension and f".{extension.lower()}" in IMAGE_EXTENSIONS


def sniff_image_format(head: bytes) -> str | None:
    """Name the image format of a file from its first bytes.

    Args:
        head: the start of the file; 64 bytes are enough.

    Returns:
        ``"jpeg"``, ``"png"``, ``"gif"``, ``"webp"``, ``"tiff"``, ``"bmp"``, ``"heif"`` (HEIC
        photos from phones) or ``"avif"`` when the magic bytes say so; ``None`` for anything
        else (HTML, text, video, other formats, empty data).
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    # Classic TIFF (42) and BigTIFF (43), little- and big-endian.
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "tiff"
    if (
        head.startswith(b"BM")
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES
    ):
        return "bmp"
    return _iso_media_kind(head)


def _iso_media_kind(head: bytes) -> str | None:
    """``"heif"`` or ``"avif"`` for a still image in an ISO media file (its ftyp brands)."""
    if head[4:8] != b"ftyp":
        return None
    box_end = min(int.from_bytes(head[0:4], "big"), len(head))
    brands = {head[8:12].decode("latin-1")} | {
        head[i : i + 4].decode("latin-1") for i in range(16, box_end - 3, 4)
    }
    if brands & _AVIF_BRANDS:
        return "avif"
    if brands & _HEIF_BRANDS:
        return "heif"
    return None


def decode_image(
    data: bytes,
    size: int,
    *,
    max_pixels: int = PILLOW_DEFAULT_MAX_PIXELS,
    min_side: int = 8,
) -> np.ndarray:
    """Decode image bytes into the square RGB array the model takes.

    The first frame of an animation is used, EXIF orientation is applied, every colour mode
    becomes 8-bit RGB (transparency composited over white, 16-bit and float data scaled, not
    clipped) and the image is resized to ``size`` x ``size`` without cropping. The same bytes
    always give the same array. Safe to call from several threads at once.

    Args:
        data: the whole file.
        size: side of the square output in pixels.
        max_pixels: images whose header declares more pixels are refused before any pixel
            data is decoded (decompression bombs).
        min_side: images with a side shorter than this are refused (tracking pixels, icons).

    Returns:
        A new ``uint8`` array of shape ``(size, size, 3)`` in RGB order.

    Raises:
        ImageDecodeError: the bytes are empty, not an image, an unsupported kind of image,
            too large, too small, truncated or corrupt; ``reason`` says which.
        ValueError: ``size`` or ``max_pixels`` is not positive (a programming error).
    """
    if size < 1 or max_pixels < 1:
        raise ValueError(f"size and max_pixels must be positive, got {size} and {max_pixels}")
    return _decode(
        data, lambda image, kind: _to_model_input(image, kind, size), max_pixels, min_side
    )


def decode_preview(
    data: bytes,
    max_side: int,
    *,
    max_pixels: int = PILLOW_DEFAULT_MAX_PIXELS,
    min_side: int = 8,
) -> Image.Image:
    """Decode image bytes into an upright RGB picture for people, aspect ratio kept.

    The same decoding as :func:`decode_image` (first frame, EXIF orientation, every colour
    mode to 8-bit RGB, the same limits and the same errors), shrunk so its longest side is at
    most ``max_side``; never enlarged.

    Raises:
        ImageDecodeError: as :func:`decode_image`.
        ValueError: ``max_side`` or ``max_pixels`` is not positive.
    """
    if max_side < 1 or max_pixels < 1:
        raise ValueError(f"max_side and max_pixels must be positive, got {max_side}, {max_pixels}")

    def preview(image: ImageFile.ImageFile, kind: str) -> Image.Image:
        if kind == "jpeg":
            image.draft("RGB", (max_side, max_side))
        image.load()
        rgb = _to_rgb(_apply_exif_orientation(image))
        rgb.thumbnail((max_side, max_side), _RESAMPLE, reducing_gap=_REDUCING_GAP)
        return rgb

    return _decode(data, preview, max_pixels, min_side)


def _decode(
    data: bytes,
    finish: Callable[[ImageFile.ImageFile, str], _Decoded],
    max_pixels: int,
    min_side: int,
) -> _Decoded:
    """Sniff, check and open ``data``, then ``finish(image, kind)``; every failure becomes
    an :class:`ImageDecodeError` with a reason for people."""
    kind = sniff_image_format(data[:64])
    if kind is None:
        raise ImageDecodeError(_describe_non_image(data))
    # Checked here because the WebP decoder allocates its whole canvas as soon as it is created.
    if kind == "webp" and (declared := _webp_canvas_size(data)) is not None:
        _check_dimensions(*declared, max_pixels=max_pixels, min_side=min_side)
    label = kind.upper()
    try:
        image = _image_class(kind)(io.BytesIO(data))
        _check_dimensions(*image.size, max_pixels=max_pixels, min_side=min_side)
        label = f"{image.size[0]}x{image.size[1]} {kind.upper()}"
        return finish(image, kind)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(f"{label} is too large to decode safely: {error}") from error
    except MemoryError as error:
        raise ImageDecodeError(
            f"not enough memory to decode this {label}; lower {MAX_PIXELS_SETTING} "
            "or give the worker more memory"
        ) from error
    except Exception as error:
        # Pillow's plugins fail with whatever their parsers hit on bad data: OSError,
        # SyntaxError, ValueError, struct.error, EOFError, IndexError, KeyError, TypeError,
        # ZeroDivisionError. Each is, to the caller, the same thing: unusable bytes.
        raise ImageDecodeError(
            f"truncated or corrupt {kind.upper()}: {_exception_text(error)}"
        ) from error


def _to_model_input(image: ImageFile.ImageFile, kind: str, size: int) -> np.ndarray:
    """Decode an opened image into the upright, RGB, ``size`` x ``size`` uint8 array."""
    if kind == "jpeg":
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale while the result still covers the
        # target size: a 24-megapixel photo then costs about as much as a thumbnail.
        image.draft("RGB", (size, size))
    image.load()
    rgb = _to_rgb(_apply_exif_orientation(image))
    # Squash to the square, never crop: a tag's subject near an edge (a boat at the side of
    # a harbour) stays in view. Training sees the same squashed geometry, so the model learns
    # it rather than meeting it for the first time in production.
    square = rgb.resize((size, size), _RESAMPLE, reducing_gap=_REDUCING_GAP)
    return np.array(square, dtype=np.uint8)


def _image_class(kind: str) -> Callable[[io.BytesIO], ImageFile.ImageFile]:
    if kind != "heif":
        return _IMAGE_CLASSES[kind]
    try:
        from pillow_heif.as_plugin import HeifImageFile
    except ImportError:
        raise ImageDecodeError(
            "HEIF image (a phone's HEIC photo): decoding it needs the pillow-heif package, "
            "which is not installed (pip install pillow-heif)"
        ) from None
    return HeifImageFile


def _check_dimensions(width: int, height: int, *, max_pixels: int, min_side: int) -> None:
    pixels = width * height
    if pixels > max_pixels:
        raise ImageDecodeError(
            f"image is {width}x{height} ({_pixel_count(pixels)}), above the limit of "
            f"{_pixel_count(max_pixels)} ({MAX_PIXELS_SETTING})"
        )
    if min(width, height) < min_side:
        raise ImageDecodeError(
            f"image is {width}x{height} pixels, smaller than the {min_side}-pixel minimum side"
        )


def _pixel_count(pixels: int) -> str:
    if pixels >= 100_000:
        return f"{pixels / 1_000_000:.1f} megapixels"
    return f"{pixels:,} pixels"


def _webp_canvas_size(data: bytes) -> tuple[int, int] | None:
    """Read a WebP file's canvas size from its first chunk, or ``None`` if it is not there."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        height = int.from_bytes(data[28:30], "little") & 0x3FFF
        return width, height
    return None


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as error:
        # A photo whose EXIF block cannot be parsed is still a usable photo; it is shown the
        # way it is stored, as most viewers would.
        logger.debug("ignoring unreadable EXIF orientation: %s", _exception_text(error))
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _scale_to_8_bit(image).convert("RGB")
    if "transparency" in image.info or mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        # Transparent pixels often store black; composite over white so a logo on a
        # transparent background does not become a logo on black.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ImageDecodeError(f"unsupported colour mode {mode!r}: {error}") from error


def _scale_to_8_bit(image: Image.Image) -> Image.Image:
    """Map 16-bit, 32-bit integer and float grey levels onto 0-255.

    Pillow's ``convert("L")`` clips these to 255, so a mid-grey 16-bit image would turn white.
    Integer images are taken as 16-bit data (what 16-bit PNG and TIFF files hold) and floats
    as 0-1 if they stay within it, else as 0-255: fixed scales, not per-image stretching,
    so a dark image stays dark.
    """
    values = np.asarray(image)
    if image.mode == "F":
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        grey = np.clip(np.rint(values), 0, 255)
    else:
        wide = np.clip(values.astype(np.int64), 0, _SIXTEEN_BIT_MAX)
        grey = (wide * 255 + _SIXTEEN_BIT_MAX // 2) // _SIXTEEN_BIT_MAX
    return Image.fromarray(grey.astype(np.uint8))


def _describe_non_image(data: bytes) -> str:
    """Say what bytes that are not a supported image look like, for a person to act on."""
    if not data:
        return "empty file (0 bytes)"
    head = data[:512]
    stripped = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    lowered = stripped[:256].lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered:
        return "not an image: the file starts like an HTML page"
    if b"<svg" in lowered:
        return "not an image mlc can decode: the file is an SVG drawing"
    if lowered.startswith(b"<?xml"):
        return "not an image: the file starts like an XML document"
    if lowered.startswith(b"%pdf"):
        return "not an image: the file is a PDF document"
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", errors="replace").strip()
        if brand in ("heic", "heix", "heim", "heis", "hevc", "mif1", "msf1", "avif", "avis"):
            return f"not an image mlc can decode: the file is a HEIF/AVIF image (brand {brand!r})"
        return f"not an image: the file looks like a video (ISO media brand {brand!r})"
    if lowered.startswith((b"{", b"[")):
        return "not an image: the file starts like JSON"
    text = _as_text(head)
    if text is not None:
        snippet = " ".join(text.split())[:_TEXT_SNIPPET_CHARS]
        return f"not an image: the file looks like text ({snippet!r})"
    return f"not an image: unrecognised content (first bytes 0x{data[:8].hex()})"


def _as_text(head: bytes) -> str | None:
    """Return ``head`` as text if it reads as printable UTF-8, else ``None``."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        # The 512-byte window may cut a multi-byte character in two at its end.
        if error.start < len(head) - 3:
            return None
        text = head[: error.start].decode("utf-8")
    if re.search(r"[\x00-\x08\x0e-\x1f\x7f]", text):
        return None
    return text


def _exception_text(error: BaseException) -> str:
    return str(error) or type(error).__name__
