"""CPU time per thread of this process, grouped by what the thread does (Linux only).

The scoring benchmark's floor says what each stage costs alone; this says what each stage's
threads cost inside the pipeline, so the difference (the glue) can be placed: in the reader
threads, the database threads, the model's threads, the scoring thread or the kernel.

Threads that end before the run does (readers shut down at its end) would vanish from
``/proc``, so a sampler thread reads every thread's counters a few times a second and keeps
the last reading of each.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

TASKS = Path("/proc/self/task")
SAMPLE_SECONDS = 0.1
SAMPLER_THREAD = "bench-sampler"
# Python threads by their name, digits dropped (mlc-read-3 -> mlc-read); the rest by what
# their kernel name says they are.
NATIVE_GROUPS = {"tokio-rt-worker": "obstore (Rust runtime)"}


def _readings() -> dict[int, tuple[str, float, float]]:
    """Thread id -> (kernel name, user seconds, system seconds)."""
    ticks = os.sysconf("SC_CLK_TCK")
    readings = {}
    for task in TASKS.iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        readings[int(task.name)] = (name, int(fields[11]) / ticks, int(fields[12]) / ticks)
    return readings


class ThreadCpu:
    """Samples this process's threads from :meth:`start` to :meth:`stop`."""

    def __init__(self) -> None:
        self._start: dict[int, tuple[str, float, float]] = {}
        self._last: dict[int, tuple[str, float, float]] = {}
        self._python_names: dict[int, str] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._sample, name=SAMPLER_THREAD, daemon=True)
        self.available = TASKS.is_dir()

    def start(self) -> None:
        if not self.available or self._thread.is_alive():
            return
        self._start = _readings()
        self._thread.start()

    def _sample(self) -> None:
        while not self._stopped.wait(SAMPLE_SECONDS):
            self._note()

    def _note(self) -> None:
        for thread in threading.enumerate():
            if thread.native_id is not None:
                self._python_names[thread.native_id] = thread.name
        self._last.update(_readings())

    def stop(self) -> dict[str, dict[str, float]]:
        """Group -> {"user", "system", "threads"}: CPU seconds since :meth:`start`."""
        if not self._thread.is_alive():
            return {}
        self._stopped.set()
        self._thread.join()
        self._note()
        groups: dict[str, dict[str, float]] = {}
        for tid, (name, user, system) in self._last.items():
            before = self._start.get(tid, (name, 0.0, 0.0))
            group = groups.setdefault(
                self._group(tid, name), {"user": 0.0, "system": 0.0, "threads": 0}
            )
            group["user"] += user - before[1]
            group["system"] += system - before[2]
            group["threads"] += 1
        return groups

    def _group(self, tid: int, kernel_name: str) -> str:
        if tid == os.getpid():
            return "main (scoring thread)"
        if tid in self._python_names:
            return re.sub(r"[-_]?\d+$", "", self._python_names[tid])
        if kernel_name in NATIVE_GROUPS:
            return NATIVE_GROUPS[kernel_name]
        # TensorFlow's own pools: its inter-op threads are named tf_*, its intra-op (Eigen)
        # threads keep the name of the process that started them.
        return "TensorFlow"
