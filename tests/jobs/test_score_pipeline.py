"""The scoring pipeline: reads run ahead of inference in several threads, writes overlap
inference, and the number of images in flight stays bounded."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mlc_core.jobs.scoring import ScoreProgress, score_images
from mlc_core.jobs.scoring.feeder import BATCHES_IN_FLIGHT
from mlc_core.jobs.workspace import Workspace
from mlc_core.settings import load_settings
from mlc_core.storage import LocalStore
from tests.jobs.scoring_support import opened, put_tiny_images, query, register_champion

BATCH_SIZE = 4
IMAGES = 64


class CountingStore(LocalStore):
    """A local store that counts the reads of images and the threads they run in."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self._lock = threading.Lock()
        self.reads = 0
        self.threads: set[str] = set()

    def get(self, key: str, **options: Any) -> bytes:
        if not key.startswith("images/"):
            return super().get(key, **options)
        with self._lock:
            self.reads += 1
            self.threads.add(threading.current_thread().name)
        return super().get(key, **options)


@dataclasses.dataclass
class Observation:
    done: int
    reads: int
    committed_scores: int


@dataclasses.dataclass
class ObservedRun:
    workspace: Workspace
    store: CountingStore
    observations: list[Observation]
    reads_during_stall: list[int]


READS_BOUND = (BATCHES_IN_FLIGHT + 2) * BATCH_SIZE


@pytest.fixture(scope="module")
def observed_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedRun]:
    """One run of 64 images in batches of 4, shared by the tests of this module.

    The scoring thread stalls in the progress callback of the first batch, as it would in a
    slow inference: reads go on meanwhile, up to the bound, and no further.
    """
    home = tmp_path_factory.mktemp("pipeline") / "mlc-home"
    settings = load_settings(home=home, scoring={"batch_size": BATCH_SIZE, "read_workers": 4})
    with opened(settings) as workspace:
        register_champion(workspace)
        put_tiny_images(workspace, IMAGES)
        store = CountingStore(workspace.store.url)
        run = ObservedRun(workspace, store, [], [])

        def observe(progress: ScoreProgress) -> None:
            if not run.observations:
                deadline = time.monotonic() + 20
                while store.reads < READS_BOUND and time.monotonic() < deadline:
                    time.sleep(0.01)
                run.reads_during_stall.append(store.reads)
                time.sleep(0.5)
                run.reads_during_stall.append(store.reads)
            [(committed,)] = query(workspace, "select count(*) from scores")
            run.observations.append(Observation(progress.done, store.reads, committed))

        report = score_images(dataclasses.replace(workspace, store=store), on_progress=observe)
        assert report.scored == IMAGES
        yield run


def test_later_batches_are_read_while_the_scoring_thread_is_busy(observed_run: ObservedRun) -> None:
    assert observed_run.observations[0].done == BATCH_SIZE
    assert observed_run.reads_during_stall[0] == READS_BOUND


def test_reads_stop_at_a_few_batches_ahead_of_inference(observed_run: ObservedRun) -> None:
    assert observed_run.reads_during_stall == [READS_BOUND, READS_BOUND]
    assert max(o.reads - o.done for o in observed_run.observations) <= READS_BOUND
    assert observed_run.store.reads == IMAGES


def test_images_are_read_in_several_threads(observed_run: ObservedRun) -> None:
    assert len(observed_run.store.threads) > 1


def test_batches_are_committed_while_inference_goes_on(observed_run: ObservedRun) -> None:
    before_the_last = observed_run.observations[:-1]

    assert any(o.committed_scores > 0 for o in before_the_last)
    assert all(o.committed_scores % BATCH_SIZE == 0 for o in observed_run.observations)
