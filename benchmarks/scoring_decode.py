"""JPEG decode benchmark (not a test): Pillow draft mode against simplejpeg and PyTurboJPEG.

For photo-like JPEGs of about 0.1 (the natural_scene photos themselves), 0.5, 2 and 12
megapixels, it times one thread's CPU per photo of decoding to the model input of the default
image size (128 px): the JPEG decode at the DCT scale that still covers the target, then the
same bicubic resize to the square. The rows:

- ``mlc decode_image``: what scoring does (sniff, Pillow draft, EXIF orientation, RGB, resize);
- ``pillow draft``: Pillow's draft decode and resize alone;
- ``simplejpeg``: libjpeg-turbo through simplejpeg (``min_height``/``min_width`` pick the
  scale), then Pillow's resize;
- ``turbojpeg``: libjpeg-turbo through PyTurboJPEG at the scaling factor Pillow's draft picks,
  then Pillow's resize (skipped with the reason when its library is missing);
- ``... no resize``: the JPEG decode alone, to show what the resize costs.

Usage::

    python -m benchmarks.scoring_decode [--size 128] [--repeats 200]

Prints, per photo size, core-ms per photo, each row's speed-up over ``mlc decode_image``, and
the JPEG decode's CPU per compressed megabyte: at the 1/8 scale a 2 MP photo needs for 128 px,
the cost is the entropy (Huffman) decoding of every compressed bit, which DCT scaling cannot
skip, so all three libjpeg-turbo front ends land within a few per cent of each other.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import DEFAULT_DATASET

MEGAPIXELS = (0.5, 2.0, 12.0)


def _photo_of(source: bytes, megapixels: float, seed: int) -> bytes:
    """An upscaled, noisy 4:3 JPEG of ``megapixels`` made from one natural_scene photo."""
    rng = np.random.default_rng(seed)
    with Image.open(io.BytesIO(source)) as opened:
        image = opened.convert("RGB")
    height = round((megapixels * 1e6 / (4 / 3)) ** 0.5)
    width = round(height * 4 / 3)
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    noisy = np.asarray(image, dtype=np.int16) + rng.normal(0, 3, (height, width, 1))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _cpu_ms(function: Callable[[bytes], object], photos: list[bytes], repeats: int) -> float:
    """One thread's CPU time per call, over ``repeats`` calls cycling through ``photos``."""
    for photo in photos[:3]:
        function(photo)
    started = time.thread_time()
    for index in range(repeats):
        function(photos[index % len(photos)])
    return (time.thread_time() - started) / repeats * 1000


def _square(pixels: np.ndarray, size: int) -> np.ndarray:
    image = Image.fromarray(pixels)
    resized = image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(resized)


def _candidates(size: int) -> dict[str, Callable[[bytes], object] | str]:
    """Each decoder by name, or why it cannot run here."""
    import simplejpeg

    from mlc_core.images import decode_image

    def pillow_draft(data: bytes, resize: bool = True) -> object:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (size, size))
        image.load()
        if not resize:
            return image
        return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0))

    def simple(data: bytes, resize: bool = True) -> object:
        pixels = simplejpeg.decode_jpeg(data, "RGB", min_height=size, min_width=size)
        return _square(pixels, size) if resize else pixels

    rows: dict[str, Callable[[bytes], object] | str] = {
        "mlc decode_image": lambda data: decode_image(data, size),
        "pillow draft": pillow_draft,
        "simplejpeg": simple,
        "simplejpeg fastdct+fastupsample": lambda data: _square(
            simplejpeg.decode_jpeg(
                data, "RGB", fastdct=True, fastupsample=True, min_height=size, min_width=size
            ),
            size,
        ),
    }
    try:
        from turbojpeg import TJPF_RGB, TurboJPEG

        turbo = TurboJPEG()
    except Exception as error:  # missing library or an incompatible version
        rows["turbojpeg"] = f"not available: {error}".splitlines()[0]
    else:

        def turbojpeg(data: bytes, resize: bool = True) -> object:
            width, height, _, _ = turbo.decode_header(data)
            factor = max(
                (f for f in ((1, 8), (1, 4), (1, 2)) if min(width, height) * f[0] / f[1] >= size),
                key=lambda f: f[1],
                default=(1, 1),
            )
            pixels = turbo.decode(data, pixel_format=TJPF_RGB, scaling_factor=factor)
            return _square(pixels, size) if resize else pixels

        rows["turbojpeg"] = turbojpeg
        rows["turbojpeg no resize"] = lambda data: turbojpeg(data, resize=False)
    rows["pillow draft no resize"] = lambda data: pillow_draft(data, resize=False)
    rows["simplejpeg no resize"] = lambda data: simple(data, resize=False)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="model input side in pixels")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    arguments = parser.parse_args(argv)
    sources = sorted(arguments.dataset.glob("*.jpg"))[:8]
    small = [path.read_bytes() for path in sources]
    sets = {"0.1 MP (natural_scene)": small}
    for megapixels in MEGAPIXELS:
        sets[f"{megapixels:g} MP"] = [
            _photo_of(source, megapixels, seed) for seed, source in enumerate(small[:4])
        ]
    rows = _candidates(arguments.size)
    print(
        f"decode to {arguments.size} px, one thread's CPU per photo (core-ms), "
        f"{os.cpu_count()} cores shared with other work"
    )
    for label, photos in sets.items():
        repeats = max(20, arguments.repeats // (4 if "12" in label else 1))
        average_kb = sum(map(len, photos)) / len(photos) / 1024
        print(f"{label} ({average_kb:.0f} KB on average):")
        baseline: float | None = None
        for name, function in rows.items():
            if isinstance(function, str):
                print(f"  {name:34s} {function}")
                continue
            milliseconds = _cpu_ms(function, photos, repeats)
            baseline = baseline or milliseconds
            print(f"  {name:34s} {milliseconds:7.2f} ms   x{baseline / milliseconds:.2f}")
            if name == "simplejpeg no resize":
                # At 1/8 scale the IDCT is almost free; what is left is entropy decoding,
                # which no library can skip and which grows with the compressed bytes.
                per_megabyte = milliseconds / (average_kb / 1024)
                print(f"  {'(JPEG decode per compressed MB)':34s} {per_megabyte:7.2f} ms")


if __name__ == "__main__":
    main()
