"""The stage floor of the scoring benchmark: each stage alone, single-threaded, CPU per image.

The floor is what the work itself costs one core, with no threads, queues or glue around it:

- the GET: the store's ``get`` of each listed version (etag, byte limit), one after another,
  as the scoring process's CPU (all its threads: obstore's requests run on its own runtime);
- the decode: :func:`~mlc_core.images.decode_image` to the model size, this thread's CPU;
- the inference: the model on decoded tensors at the production batch size (the ceiling);
- the database: per batch, the claim (``claim_images``, with the heartbeat it commits with)
  and the writer's commit of scores, tags and released claims, exactly as the pipeline issues
  them, as this process's CPU (PostgreSQL's own CPU is the server's, not the pipeline's).

The pipeline's figure to compare is the scoring process's own CPU per image in its scoring
phase; floor / pipeline says what the pipeline's threads, queues and glue add.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class StageFloor:
    """Core-ms per image of each stage alone."""

    get_ms: float
    decode_ms: float
    inference_ms: float
    claim_ms: float
    write_ms: float

    @property
    def total_ms(self) -> float:
        return self.get_ms + self.decode_ms + self.inference_ms + self.claim_ms + self.write_ms

    def describe(self) -> str:
        return (
            f"GET {self.get_ms:.2f} + decode {self.decode_ms:.2f} + inference "
            f"{self.inference_ms:.2f} + claim {self.claim_ms:.2f} + write {self.write_ms:.2f} "
            f"= {self.total_ms:.2f} core-ms per image"
        )

    @classmethod
    def mean(cls, first: StageFloor, second: StageFloor) -> StageFloor:
        """Each stage's mean of two measurements."""
        return cls(
            (first.get_ms + second.get_ms) / 2,
            (first.decode_ms + second.decode_ms) / 2,
            (first.inference_ms + second.inference_ms) / 2,
            (first.claim_ms + second.claim_ms) / 2,
            (first.write_ms + second.write_ms) / 2,
        )

    def dominant(self) -> str:
        stages = {
            "GET": self.get_ms,
            "decode": self.decode_ms,
            "inference": self.inference_ms,
            "database (claim + write)": self.claim_ms + self.write_ms,
        }
        return max(stages, key=lambda name: stages[name])


def get_floor_ms(store: Any, count: int) -> tuple[float, list[bytes]]:
    """Process CPU per GET over the first ``count`` listed images, and their bytes."""
    infos = [info for page in store.list_pages("images/") for info in page][:count]
    for info in infos[:5]:
        store.get(info.key, etag=info.etag, max_bytes=256 * 1024 * 1024)
    started = time.process_time()
    data = [store.get(info.key, etag=info.etag, max_bytes=256 * 1024 * 1024) for info in infos]
    return (time.process_time() - started) / len(infos) * 1000, data


def decode_floor_ms(photos: list[bytes], image_size: int) -> float:
    """This thread's CPU per decode to the model size."""
    from mlc_core.images import decode_image

    for photo in photos[:3]:
        decode_image(photo, image_size)
    started = time.thread_time()
    for photo in photos:
        decode_image(photo, image_size)
    return (time.thread_time() - started) / len(photos) * 1000


def database_floor_ms(workspace: Any, batch_size: int, limit: int) -> tuple[float, float]:
    """Process CPU per image of claiming, and of committing results, single-threaded.

    Discovers the store's images into the (fresh) database of ``workspace``, then claims and
    commits up to ``limit`` of them a batch at a time with the pipeline's own calls, with
    made-up probabilities.
    """
    from mlc_core.db.claims import claim_images
    from mlc_core.db.model_versions import require_champion
    from mlc_core.db.pending import ScoringScope
    from mlc_core.db.runs import live_after, record_heartbeat
    from mlc_core.db.scores import ImageScore
    from mlc_core.jobs.scoring.discovery import discover_images
    from mlc_core.jobs.scoring.reports import ScoreReport
    from mlc_core.jobs.scoring.run import RunContext, start_scoring_run
    from mlc_core.jobs.scoring.writer import BatchResult, BatchWriter
    from mlc_core.labels import LabelVocabulary

    prefix = workspace.settings.images_prefix
    with workspace.transaction() as session:
        champion = require_champion(session)
        session.expunge(champion)
    run_id, run_started = start_scoring_run(
        workspace, mode="new", prefixes=[prefix], batch_size=batch_size
    )
    discover_images(workspace, [prefix], ScoreReport(champion.version, "new", [prefix]))
    scope = ScoringScope(
        model_version_id=champion.id,
        mode="new",
        uri_prefixes=(workspace.store.root_uri + prefix,),
        since=run_started,
    )
    context = RunContext(workspace, scope, run_id)
    writer = BatchWriter(context, LabelVocabulary(tuple(champion.classes)), replace=False)
    rng = np.random.default_rng(1)
    claim_cpu = write_cpu = 0.0
    done, cursor = 0, 0
    try:
        while cursor is not None and done < limit:
            started = time.process_time()
            with workspace.transaction() as session:
                record_heartbeat(session, run_id)
                batch = claim_images(
                    session,
                    scope,
                    run_id=run_id,
                    after_id=cursor,
                    limit=batch_size,
                    live_after=live_after(session, context.lease),
                    max_abandoned_claims=3,
                )
            claim_cpu += time.process_time() - started
            cursor = batch.last_id
            ids = [image.id for image in batch.images]
            scores = [
                ImageScore(i, tuple(round(float(p), 6) for p in rng.random(len(champion.classes))))
                for i in ids
            ]
            started = time.process_time()
            # The writer thread's commit, run here so nothing else shares the measurement.
            writer._commit(BatchResult(ids, scores, []))
            write_cpu += time.process_time() - started
            done += len(ids)
    finally:
        writer.close()
    return claim_cpu / max(done, 1) * 1000, write_cpu / max(done, 1) * 1000
