"""Small, deterministic image files for tests: good ones, odd-but-good ones and bad ones.

Everything returns the bytes of a file, built in memory by Pillow (or by hand where Pillow
would refuse to write something broken). The same call always returns the same bytes.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image

RED = (200, 30, 30)
GREEN = (30, 160, 60)
BLUE = (30, 60, 200)
MID_GREY_16_BIT = 32768
EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientation 6: the stored pixels must be turned 90 degrees clockwise to be upright.
EXIF_ROTATE_90_CLOCKWISE = 6


def encode(image: Image.Image, file_format: str, **params: Any) -> bytes:
    """Return ``image`` saved in ``file_format`` (a Pillow format name such as ``"PNG"``)."""
    buffer = io.BytesIO()
    image.save(buffer, file_format, **params)
    return buffer.getvalue()


def solid(
    width: int, height: int, color: tuple[int, ...] | int | float, mode: str = "RGB"
) -> Image.Image:
    """Return a one-colour image."""
    return Image.new(mode, (width, height), color)


def halves(
    width: int,
    height: int,
    first: tuple[int, ...] | int,
    second: tuple[int, ...] | int,
    mode: str = "RGB",
    *,
    top_bottom: bool = False,
) -> Image.Image:
    """Return an image whose left (or top) half is ``first`` and the other half ``second``."""
    image = Image.new(mode, (width, height), second)
    box = (0, 0, width, height // 2) if top_bottom else (0, 0, width // 2, height)
    image.paste(first, box)
    return image


def textured(width: int, height: int) -> Image.Image:
    """Return an RGB image with detail everywhere, so JPEG data spans the whole file."""
    rows, columns = np.mgrid[0:height, 0:width]
    pattern = np.stack(
        [(columns * 7) % 256, (rows * 5) % 256, ((rows + columns) * 3) % 256], axis=-1
    )
    return Image.fromarray(pattern.astype(np.uint8))


def jpeg(
    width: int = 64,
    height: int = 48,
    color: tuple[int, int, int] = RED,
    quality: int = 90,
) -> bytes:
    """Return a one-colour RGB JPEG."""
    return encode(solid(width, height, color), "JPEG", quality=quality)


def png(
    width: int = 64,
    height: int = 48,
    color: tuple[int, ...] | int = RED,
    mode: str = "RGB",
) -> bytes:
    """Return a one-colour PNG in ``mode`` (``color`` must suit the mode)."""
    return encode(solid(width, height, color, mode), "PNG")


def animated(file_format: str, frames: list[tuple[int, int, int]], side: int = 32) -> bytes:
    """Return an animation with one solid frame per colour, in ``file_format``."""
    images = [solid(side, side, color) for color in frames]
    return encode(
        images[0], file_format, save_all=True, append_images=images[1:], duration=100, loop=0
    )


def exif_rotated_jpeg() -> bytes:
    """Return a JPEG stored red-on-top/blue-below whose EXIF says to turn it 90 degrees clockwise.

    Upright, red is on the right and blue on the left.
    """
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = EXIF_ROTATE_90_CLOCKWISE
    stored = halves(64, 32, RED, BLUE, top_bottom=True)
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def palette_png_with_transparency() -> bytes:
    """Return a palette PNG: left half a transparent black entry, right half opaque red."""
    image = halves(48, 48, 0, 1, "P")
    image.putpalette([0, 0, 0, *RED])
    return encode(image, "PNG", transparency=0)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """Return one PNG chunk with a correct CRC."""
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_declaring(width: int, height: int) -> bytes:
    """Return a tiny PNG whose header declares ``width`` x ``height`` 8-bit grey pixels.

    Only a few rows of pixel data follow: a decoder that trusted the header would allocate
    the full image before finding out. This is how a decompression bomb is made cheaply.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )


def webp_declaring(width: int, height: int) -> bytes:
    """Return the start of an extended WebP file declaring a ``width`` x ``height`` canvas."""
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4
    body += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def _png_with_bad_header_crc() -> bytes:
    data = bytearray(png())
    # The IHDR CRC sits after the 8-byte signature, 8-byte chunk head and 13-byte header.
    data[29] ^= 0xFF
    return bytes(data)


def _png_with_garbled_pixel_data() -> bytes:
    pixels = zlib.compress(bytes(range(256)) * 16)
    garbled = pixels[:2] + bytes(byte ^ 0x5A for byte in pixels[2:])
    header = struct.pack(">IIBBBBB", 64, 64, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", garbled)
        + png_chunk(b"IEND", b"")
    )


def heic(image: Image.Image) -> bytes:
    """``image`` as a HEIC photo, as phones save them (through pillow-heif's encoder)."""
    from pillow_heif import from_pillow

    buffer = io.BytesIO()
    from_pillow(image).save(buffer, quality=95)
    return buffer.getvalue()


def mp4_header() -> bytes:
    """The start of an MP4 video: an ISO media file of a video brand."""
    return b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64)


def bad_images() -> dict[str, bytes]:
    """Return files that ``decode_image`` must refuse, by name."""
    whole_jpeg = encode(textured(256, 192), "JPEG", quality=90)
    return {
        "zero_bytes": b"",
        "truncated_jpeg": whole_jpeg[: len(whole_jpeg) // 2],
        "png_bad_header_crc": _png_with_bad_header_crc(),
        "png_garbled_pixel_data": _png_with_garbled_pixel_data(),
        "text_named_jpg": b"this is a note someone saved as photo.jpg\nnot a picture\n",
        "html_error_page": (
            b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
            b"<body><h1>Not Found</h1></body></html>\n"
        ),
        "unknown_binary": bytes(range(200, 256)) * 4,
        "decompression_bomb_png": png_declaring(20_000, 20_000),
        "decompression_bomb_webp": webp_declaring(16_383, 16_383),
        "tracking_pixel_1x1": encode(solid(1, 1, 0, "P"), "GIF", transparency=0),
        "truncated_heic": heic(textured(128, 96))[:400],
        "mp4_video_named_jpg": mp4_header(),
    }


def good_odd_images() -> dict[str, bytes]:
    """Return unusual files that ``decode_image`` must still decode, by name."""
    return {
        "long_20000x64_jpeg": jpeg(20_000, 64, GREEN),
        "cmyk_jpeg": encode(solid(48, 48, (0, 255, 255, 0), "CMYK"), "JPEG", quality=95),
        "grey_16_bit_png": png(48, 48, MID_GREY_16_BIT, "I;16"),
        "palette_png_with_transparency": palette_png_with_transparency(),
        "animated_gif": animated("GIF", [RED, BLUE]),
        "animated_webp": animated("WEBP", [RED, BLUE]),
        "animated_png": animated("PNG", [RED, BLUE]),
        "webp": encode(solid(48, 48, BLUE), "WEBP", quality=95),
        "tiff": encode(solid(48, 48, BLUE), "TIFF", compression="tiff_deflate"),
        "bmp": encode(solid(16, 16, BLUE), "BMP"),
        "heic": heic(solid(48, 48, BLUE)),
        "avif": encode(solid(48, 48, BLUE), "AVIF", quality=95),
        "exif_rotated_jpeg": exif_rotated_jpeg(),
        "grayscale_jpeg": encode(solid(48, 48, 100, "L"), "JPEG", quality=95),
        "rgba_png_transparent_left_half": encode(
            halves(48, 48, (0, 0, 0, 0), (*BLUE, 255), "RGBA"), "PNG"
        ),
    }


BAD_IMAGES: dict[str, bytes] = bad_images()
GOOD_ODD_IMAGES: dict[str, bytes] = good_odd_images()
