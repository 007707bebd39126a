"""The key and prefix rules shared by every backend."""

from __future__ import annotations

import pytest

from mlc_core.errors import InvalidKey
from mlc_core.storage import validate_key, validate_prefix

BAD_KEYS = [
    pytest.param("", id="empty"),
    pytest.param("/etc/passwd", id="absolute"),
    pytest.param("../x", id="parent"),
    pytest.param("a/../../x", id="parent-inside"),
    pytest.param("./a", id="dot"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a//b", id="empty-segment"),
    pytest.param("a/", id="trailing-slash"),
    pytest.param("\udcff.jpg", id="not-utf8"),
]


@pytest.mark.parametrize(
    "key", ["a", "images/1.jpg", "images/a b/ü.jpg", ".hidden", "a..b", "x" * 1024, "ü" * 512]
)
def test_valid_keys_pass_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize("key", BAD_KEYS)
def test_malformed_keys_are_invalid(key: str) -> None:
    with pytest.raises(InvalidKey) as caught:
        validate_key(key)
    assert caught.value.key == key


def test_a_key_over_1024_utf8_bytes_is_invalid_and_the_message_says_the_limit() -> None:
    with pytest.raises(InvalidKey, match="1026 UTF-8 bytes long; the limit is 1024"):
        validate_key("ü" * 513)


@pytest.mark.parametrize("prefix", ["", "images/", "images/ca", "images/a b/", "ü"])
def test_valid_prefixes_pass_unchanged(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/images", "../", "images//", "a\\b", "a/../b/"])
def test_malformed_prefixes_are_invalid(prefix: str) -> None:
    with pytest.raises(InvalidKey):
        validate_prefix(prefix)
