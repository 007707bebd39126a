"""Progress reporting from inside flows, to the Prefect log and to whoever started the run.

The CLI sets a sink here before it calls a flow in-process, so its progress bar moves while the
flow runs; a flow run started by a worker has no sink and only logs at intervals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

ProgressSink = Callable[[str, Any], None]

_sink: ContextVar[ProgressSink | None] = ContextVar("mlc_progress_sink", default=None)


@contextmanager
def progress_sink(sink: ProgressSink) -> Iterator[None]:
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


class ProgressRelay:
    """Passes each event to the sink, and to ``log`` at most every ``interval`` seconds."""

    def __init__(self, kind: str, log: Callable[[Any], None], interval: float = 10.0) -> None:
        self._kind = kind
        self._log = log
        self._interval = interval
        self._last_logged = 0.0
        self._sink = _sink.get()

    def __call__(self, event: Any) -> None:
        if self._sink is not None:
            self._sink(self._kind, event)
        now = time.monotonic()
        if now - self._last_logged >= self._interval:
            self._last_logged = now
            self._log(event)
