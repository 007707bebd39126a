"""The tagged workspace of :mod:`tests.tagged`, for the query and correction commands."""

from tests.tagged import (
    CHAMPION_SCORES,
    invoke,
    run_mlc,
    tagged,
    tagged_embedded,
)

__all__ = ["CHAMPION_SCORES", "invoke", "run_mlc", "tagged", "tagged_embedded"]
