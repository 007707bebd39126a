"""The S3 store's own timestamp parsing: the same times botocore's parser gives, faster."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from botocore.utils import parse_timestamp

from mlc_core.storage import open_store
from mlc_core.storage.s3_client import parse_timestamp as _parse_timestamp


@pytest.mark.parametrize(
    "value",
    [
        "2024-05-01T12:00:00.000Z",  # listings (XML)
        "2024-05-01T12:00:00Z",
        "Wed, 01 May 2024 12:00:00 GMT",  # headers
        "Wed, 01 May 2024 12:00:00 -0000",  # a date without a zone: left to botocore
        "2024-05-01T14:00:00+02:00",
        "1714564800",
        1714564800,
    ],
)
def test_timestamps_parse_to_the_instant_botocore_gives(value: str | int) -> None:
    parsed = _parse_timestamp(value)
    assert parsed.utcoffset() is not None
    assert parsed.astimezone(UTC) == parse_timestamp(value).astimezone(UTC)


def test_a_value_that_is_no_timestamp_is_refused_as_botocore_refuses_it() -> None:
    with pytest.raises(ValueError, match="not a time"):
        _parse_timestamp("not a time")


def test_the_listing_and_head_give_the_same_utc_modification_time(s3_store_url: str) -> None:
    store = open_store(s3_store_url)
    store.put("images/a.jpg", b"x")
    (listed,) = [info for page in store.list_pages("images/") for info in page]
    headed = store.head("images/a.jpg")
    assert listed.modified.utcoffset() == timedelta(0)
    # The listing may carry milliseconds that the Last-Modified header rounds away.
    assert abs(listed.modified - headed.modified) < timedelta(seconds=1)
