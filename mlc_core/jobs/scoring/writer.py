"""The pipeline's last stage: apply the thresholds and commit each batch in one transaction."""

from __future__ import annotations

import dataclasses
import queue
import threading
from dataclasses import dataclass

from mlc_core.db.claims import release_claims
from mlc_core.db.images import record_failures, retire_images
from mlc_core.db.runs import record_heartbeat
from mlc_core.db.scores import ImageScore, current_thresholds, delete_scores, write_scores
from mlc_core.jobs.scoring.feeder import BATCHES_IN_FLIGHT
from mlc_core.jobs.scoring.run import RunContext
from mlc_core.labels import LabelVocabulary


@dataclass
class BatchResult:
    """What the writer commits for one batch: every claimed image is in ``image_ids``.

    ``retired`` are the images whose objects turned out to be gone from the store.
    """

    image_ids: list[int]
    scores: list[ImageScore]
    failures: list[tuple[int, str]]
    retired: list[int] = dataclasses.field(default_factory=list)


class BatchWriter:
    """Commits batches from a background thread so inference never waits on the database.

    A batch's scores, tags, failures, retired images and released claims commit together or
    not at all, so a crash leaves only whole batches behind.
    """

    def __init__(self, context: RunContext, vocabulary: LabelVocabulary, replace: bool) -> None:
        self._context = context
        self._vocabulary = vocabulary
        self._replace = replace
        self._queue: queue.Queue[BatchResult | None] = queue.Queue(maxsize=BATCHES_IN_FLIGHT)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mlc-score-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (result := self._queue.get()) is not None:
            if self._error is not None:
                continue
            try:
                self._commit(result)
                self._context.made_progress()
            except BaseException as error:  # re-raised in the scoring thread by check()
                self._error = error
                self._context.stopping.set()

    def _commit(self, result: BatchResult) -> None:
        context = self._context
        model_version_id = context.scope.model_version_id
        with context.workspace.transaction() as session:
            if not record_heartbeat(session, context.run_id):
                raise context.abandoned()
            # Read in this transaction: thresholds changed by `mlc thresholds` mid-run apply
            # from the next batch on, and `mlc retag` sees every batch committed before it.
            thresholds = current_thresholds(session, model_version_id)
            fallback = context.workspace.settings.scoring.top_class_fallback
            scores = [
                dataclasses.replace(
                    score,
                    tags=tuple(
                        self._vocabulary.tags_from_probabilities(
                            score.probabilities, thresholds, top_class_fallback=fallback
                        )
                    ),
                )
                for score in result.scores
            ]
            if self._replace:
                delete_scores(
                    session,
                    model_version_id=model_version_id,
                    image_ids=[row.image_id for row in scores],
                )
            write_scores(session, model_version_id, context.run_id, scores)
            record_failures(session, result.failures)
            retire_images(session, result.retired)
            release_claims(
                session,
                run_id=context.run_id,
                model_version_id=model_version_id,
                image_ids=result.image_ids,
            )

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, result: BatchResult) -> None:
        self.check()
        self._queue.put(result)

    def close(self) -> None:
        """Commit what was submitted, stop the thread, and raise its error if it had one."""
        self._queue.put(None)
        self._thread.join()
        self.check()
