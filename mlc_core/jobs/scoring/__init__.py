"""Scoring images, in the order the data flows: ``plan`` (discovery, shards), ``run`` (the run
row, its heartbeat and end), ``pipeline`` (claim -> read -> decode -> infer -> write),
``model_cache`` (one predictor per process) and ``reports`` (what a run counted); ``score``
composes them into the two entry points re-exported here."""

from mlc_core.jobs.scoring.plan import ScoringPlan, ScoringShard, plan_scoring
from mlc_core.jobs.scoring.reports import ScoreProgress, ScoreReport, ShardTally
from mlc_core.jobs.scoring.score import score_images, score_shard

__all__ = [
    "ScoreProgress",
    "ScoreReport",
    "ScoringPlan",
    "ScoringShard",
    "ShardTally",
    "plan_scoring",
    "score_images",
    "score_shard",
]
