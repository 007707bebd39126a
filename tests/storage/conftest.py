"""Every S3 test of the storage package runs with each single-object reader: obstore and boto3.

The obstore read path must keep every promise the boto3 one does (same errors, same settings),
so the tests that reach the S3 server run once per reader.
"""

from __future__ import annotations

import pytest

from mlc_core.storage import s3

S3_FIXTURES = {"s3_server", "s3_env", "s3_store_url", "limited_s3_store_url"}
READERS = ("obstore", "boto3")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if S3_FIXTURES & set(metafunc.fixturenames) and "s3_reader" not in metafunc.fixturenames:
        metafunc.fixturenames.append("s3_reader")
    if "s3_reader" in metafunc.fixturenames:
        metafunc.parametrize("s3_reader", READERS, indirect=True)


@pytest.fixture
def s3_reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The reader every S3 store of the test uses unless told otherwise."""
    reader: str = request.param
    monkeypatch.setattr(s3, "DEFAULT_READER", reader)
    return reader
