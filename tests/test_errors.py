"""How an error reads where a person sees it (a run's error column, a skipped image's reason)."""

from __future__ import annotations

from mlc_core.errors import ImageDecodeError, describe_error


def test_an_mlc_error_reads_as_its_own_sentence() -> None:
    assert describe_error(ImageDecodeError("truncated JPEG")) == "truncated JPEG"


def test_another_error_keeps_its_type_so_it_means_something() -> None:
    assert describe_error(KeyError("x")) == "KeyError: 'x'"
    assert describe_error(RuntimeError()) == "RuntimeError"
