"""The thumbnail cache: decoded like the scorer decodes, each image once however many ask,
within its disk bound."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from PIL import Image

from mlc_core.images import decode_preview
from mlc_core.storage import LocalStore
from mlc_core.thumbnails import ThumbnailCache, ThumbnailFailure
from tests.imagefactory import bad_images, exif_rotated_jpeg, good_odd_images, textured


def _cache(tmp_path: Path, **options: int) -> tuple[LocalStore, ThumbnailCache]:
    store = LocalStore(str(tmp_path / "store"))
    store.check()
    options.setdefault("max_bytes", 10 * 1024 * 1024)
    return store, ThumbnailCache(store, tmp_path / "thumbnails", **options)


def _picture(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_a_thumbnail_is_upright_and_keeps_its_shape(tmp_path: Path) -> None:
    store, cache = _cache(tmp_path)
    info = store.put("images/rotated.jpg", exif_rotated_jpeg())

    made = cache.thumbnail("images/rotated.jpg", info.etag, 16)

    assert isinstance(made, bytes)
    picture = _picture(made).convert("RGB")
    # Stored 64 wide and 32 high, red on top; upright it is 32 x 64 with red on the right.
    assert picture.size == (8, 16)
    red, _, blue = picture.getpixel((7, 8))
    assert red > 150 and blue < 100


@pytest.mark.parametrize("name", sorted(good_odd_images()))
def test_every_image_the_scorer_takes_has_a_preview(name: str) -> None:
    picture = decode_preview(good_odd_images()[name], 64)

    assert picture.mode == "RGB" and max(picture.size) <= 64


def test_a_broken_image_gets_its_reason_instead(tmp_path: Path) -> None:
    store, cache = _cache(tmp_path)
    info = store.put("images/half.jpg", bad_images()["truncated_jpeg"])

    made = cache.thumbnail("images/half.jpg", info.etag)

    assert isinstance(made, ThumbnailFailure)
    assert "truncated or corrupt JPEG" in made.reason


def test_a_storm_of_requests_decodes_each_image_once(tmp_path: Path) -> None:
    store, cache = _cache(tmp_path, workers=2)
    data = io.BytesIO()
    textured(1200, 900).save(data, "JPEG", quality=90)
    etags = {
        f"images/{i}.jpg": store.put(f"images/{i}.jpg", data.getvalue()).etag for i in range(4)
    }
    results: list[bytes | ThumbnailFailure] = []
    start = threading.Barrier(40)

    def ask(key: str) -> None:
        start.wait()
        results.append(cache.thumbnail(key, etags[key]))

    threads = [threading.Thread(target=ask, args=(f"images/{i % 4}.jpg",)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 40 and all(isinstance(r, bytes) for r in results)
    assert dict(cache.decodes) == dict.fromkeys(etags, 1)


def test_the_cache_stays_within_its_bound_and_keeps_what_was_used(tmp_path: Path) -> None:
    store, cache = _cache(tmp_path, max_bytes=20_000)
    keys = []
    for i in range(30):
        data = io.BytesIO()
        textured(300, 300).rotate(i * 7).save(data, "JPEG", quality=95)
        keys.append((f"images/{i}.jpg", store.put(f"images/{i}.jpg", data.getvalue()).etag))
    favourite = keys[0]
    for key, etag in keys:
        cache.thumbnail(*favourite, 64)
        cache.thumbnail(key, etag, 64)
        cached = sum(p.stat().st_size for p in (tmp_path / "thumbnails").glob("*.jpg"))
        assert cached <= 20_000

    assert len(list((tmp_path / "thumbnails").glob("*.jpg"))) < 30  # some were evicted
    decoded_before = cache.decodes[favourite[0]]
    cache.thumbnail(*favourite, 64)
    assert cache.decodes[favourite[0]] == decoded_before == 1


def test_a_rewritten_image_gets_a_new_thumbnail(tmp_path: Path) -> None:
    store, cache = _cache(tmp_path)
    first = store.put("images/a.jpg", exif_rotated_jpeg())
    old = cache.thumbnail("images/a.jpg", first.etag)
    data = io.BytesIO()
    textured(100, 50).save(data, "JPEG")
    second = store.put("images/a.jpg", data.getvalue())

    new = cache.thumbnail("images/a.jpg", second.etag)

    assert isinstance(old, bytes) and isinstance(new, bytes)
    assert _picture(old).size != _picture(new).size
