"""What scoring runs count: progress snapshots, run reports, and the sum of a plan's shards.

Plain data only, so a report can be logged, stored in ``runs.counts`` or returned from a task
running on another machine.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mlc_core.jobs.scoring.drift import DriftBasis, DriftFlag, describe_drift, drifted_classes


def reason_kind(reason: str) -> str:
    """A short bucket for counting failures ("truncated or corrupt JPEG", "empty file", ...)."""
    return reason.split(":", 1)[0].strip()[:60]


@dataclass
class ScoreProgress:
    """A snapshot for progress bars and flow logs."""

    done: int
    total: int
    scored: int
    failed: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ScoreReport:
    """What a scoring run counted; plain data, safe to log or return from a flow.

    ``scored`` counts images that went through the model (by this run: images another run
    scored meanwhile are not counted); ``skipped`` counts objects left alone by reason;
    ``retired`` the images found gone from the store (by a read or a complete listing), and
    ``retire_refused`` those a listing did not show but left, as they were more than
    ``MLC_SCORING__MAX_RETIRE_FRACTION`` of the prefix; ``left_to_other_runs`` the images
    other live runs still held when this one stopped waiting for them. ``seconds`` is the
    whole run, ``scoring_seconds`` the part after discovery and model loading, and
    ``inference_seconds`` the time the model ran (close to ``scoring_seconds`` when reading,
    decoding and writing keep up with it; summed over shards, so it may exceed
    ``scoring_seconds`` when shards ran side by side). ``run_ids`` are the rows in ``runs``
    that did the scoring (one per shard); ``run_id`` is the only one when there is one.
    """

    model_version: str
    mode: str
    prefixes: list[str]
    listed: int = 0
    new: int = 0
    pending: int = 0
    scored: int = 0
    failed: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    held_by_other_runs: int = 0
    left_to_other_runs: int = 0
    retired: int = 0
    retire_refused: int = 0
    dead_runs_ended: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    scoring_seconds: float = 0.0
    inference_seconds: float = 0.0
    run_id: int | None = None
    run_ids: list[int] = field(default_factory=list)
    # How many scored images got each tag, and what that is compared with (see drift.py).
    tagged_by_class: dict[str, int] = field(default_factory=dict)
    drift_basis: DriftBasis | None = None

    @property
    def drift(self) -> list[DriftFlag]:
        """The classes whose tag rate in this run drifted from the champion's validation rate."""
        return drifted_classes(self.tagged_by_class, self.scored, self.drift_basis)

    @property
    def drift_status(self) -> str:
        return describe_drift(self.tagged_by_class, self.scored, self.drift_basis)

    @property
    def images_per_second(self) -> float:
        return (self.scored + self.failed) / self.seconds if self.seconds > 0 else 0.0

    @property
    def scoring_images_per_second(self) -> float:
        done = self.scored + self.failed
        return done / self.scoring_seconds if self.scoring_seconds > 0 else 0.0

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "images_per_second": round(self.images_per_second, 2),
            "scoring_images_per_second": round(self.scoring_images_per_second, 2),
            "drift": [asdict(flag) for flag in self.drift],
            "drift_status": self.drift_status,
        }


class ShardTally:
    """Adds up the progress and the reports of a plan's shards, in whatever order they run.

    Safe to call from several threads: shards running in the orchestrator's own process report
    their batches from task threads while it adds finished shards from its own.

    Args:
        discovery: the plan's report: what discovery listed, registered and skipped, the
            pending total and how long planning took.
        clock: seconds, for the scoring time.
    """

    def __init__(
        self, discovery: ScoreReport, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._started = clock()
        self._planning_seconds = discovery.seconds
        self._report = copy.deepcopy(discovery)
        self._finished_done = 0
        self._running: dict[int, ScoreProgress] = {}
        self._lock = threading.Lock()

    def running(self, shard_index: int, progress: ScoreProgress) -> ScoreProgress:
        """Note how far a running shard got; returns the progress of the whole plan."""
        with self._lock:
            self._running[shard_index] = progress
            return self._progress()

    def add(self, shard_index: int, shard: ScoreReport) -> ScoreProgress:
        """Count a finished shard's report; returns the progress of the whole plan."""
        with self._lock:
            self._running.pop(shard_index, None)
            report = self._report
            report.scored += shard.scored
            report.failed += shard.failed
            for reason, count in shard.failed_by_reason.items():
                report.failed_by_reason[reason] = report.failed_by_reason.get(reason, 0) + count
            for reason, count in shard.skipped.items():
                report.skip(reason, count)
            report.held_by_other_runs += shard.held_by_other_runs
            report.left_to_other_runs += shard.left_to_other_runs
            report.retired += shard.retired
            report.dead_runs_ended = sorted({*report.dead_runs_ended, *shard.dead_runs_ended})
            report.warnings += [w for w in shard.warnings if w not in report.warnings]
            report.inference_seconds += shard.inference_seconds
            report.run_ids += shard.run_ids
            for tag, count in shard.tagged_by_class.items():
                report.tagged_by_class[tag] = report.tagged_by_class.get(tag, 0) + count
            # Counted as a shard's progress counts: images skipped on reading are done too.
            self._finished_done += shard.scored + shard.failed + sum(shard.skipped.values())
            return self._progress()

    def _progress(self) -> ScoreProgress:
        running = self._running.values()
        done = self._finished_done + sum(progress.done for progress in running)
        return ScoreProgress(
            done=done,
            total=max(self._report.pending, done),
            scored=self._report.scored + sum(progress.scored for progress in running),
            failed=self._report.failed + sum(progress.failed for progress in running),
            seconds=self._clock() - self._started,
        )

    def report(self) -> ScoreReport:
        """The whole run's report: discovery's counts plus every shard added so far."""
        with self._lock:
            report = copy.deepcopy(self._report)
        elapsed = self._clock() - self._started
        report.run_ids.sort()
        report.run_id = report.run_ids[0] if len(report.run_ids) == 1 else None
        report.seconds = self._planning_seconds + elapsed
        report.scoring_seconds = elapsed
        return report
