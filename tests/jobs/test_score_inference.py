"""How scoring runs the model: forward passes of MLC_SCORING__INFERENCE_BATCH_SIZE images on
MLC_SCORING__INFERENCE_THREADS TensorFlow threads, with the same probabilities whatever both
are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from mlc_core.jobs.scoring import score_images
from mlc_core.jobs.scoring.model_cache import scoring_predictor
from mlc_core.settings import ScoringSettings, load_settings
from tests.jobs.scoring_support import opened, put_tiny_images, query, register_champion

IMAGES = 20


def _scores(home: Path, inference_batch_size: int) -> list[tuple[str, object]]:
    scoring = {"batch_size": 8, "read_workers": 2, "inference_batch_size": inference_batch_size}
    with opened(load_settings(home=home, scoring=scoring)) as workspace:
        champion = register_champion(workspace)
        put_tiny_images(workspace, IMAGES)
        report = score_images(workspace)
        assert report.scored == IMAGES
        scoring = workspace.settings.scoring
        predictor = scoring_predictor(workspace.store, champion, scoring, scoring.batch_size)
        # Passes never larger than the batch: a batch of 8 is not padded to 64.
        assert predictor.batch_size == min(inference_batch_size, 8)
        rows = query(
            workspace,
            "select i.uri, s.probabilities from scores s join images i on i.id = s.image_id",
        )
        # The two stores live in other folders: an image is named by its file name.
        return sorted((str(uri).rsplit("/", 1)[1], probabilities) for uri, probabilities in rows)


def test_a_batch_scored_in_smaller_forward_passes_gets_the_same_probabilities(
    tmp_path: Path,
) -> None:
    # Batches of 8 in passes of 3 (the last pass of each batch padded), against one pass each.
    in_passes = _scores(tmp_path / "passes", 3)
    whole = _scores(tmp_path / "whole", 64)

    assert len(in_passes) == IMAGES and in_passes == whole


def test_inference_threads_hold_where_scoring_is_the_first_tensorflow_work() -> None:
    # A process of its own: TensorFlow fixes its threads once it has run an operation, which
    # this test process did long ago.
    program = (
        "import tensorflow as tf\n"
        "from mlc_core.model.predict import use_inference_threads\n"
        "first = use_inference_threads(1)\n"
        "tf.constant(1.0) + 1.0\n"
        "later = use_inference_threads(2)\n"
        "print(first, later, tf.config.threading.get_intra_op_parallelism_threads())\n"
    )
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    # In force before TensorFlow ran; refused (and said so in the log) after: one thread still.
    assert result.stdout.split() == ["True", "False", "1"]


def test_a_scoring_run_in_a_fresh_process_scores_on_one_tensorflow_thread(tmp_path: Path) -> None:
    # As `mlc score` or a worker runs it: scoring is the process's first TensorFlow work, so
    # the default of one thread must be set before the model is loaded. The champion is made
    # here, as making its file runs TensorFlow.
    home = tmp_path / "mlc-home"
    with opened(load_settings(home=home)) as workspace:
        register_champion(workspace)
        put_tiny_images(workspace, 4)
    program = (
        "import sys\n"
        "import tensorflow as tf\n"
        "from mlc_core.jobs.scoring import score_images\n"
        "from mlc_core.jobs.workspace import open_workspace\n"
        "from mlc_core.settings import load_settings\n"
        "workspace = open_workspace(load_settings(home=sys.argv[1]))\n"
        "scored = score_images(workspace).scored\n"
        "workspace.close()\n"
        "print(scored, tf.config.threading.get_intra_op_parallelism_threads())\n"
    )
    environment = {name: value for name, value in os.environ.items() if not name.startswith("MLC_")}
    result = subprocess.run(
        [sys.executable, "-c", program, str(home)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**environment, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["4", "1"]


def test_inference_settings_refuse_what_cannot_run() -> None:
    for bad in ({"inference_batch_size": 0}, {"inference_threads": -1}):
        with pytest.raises(ValidationError, match="inference_"):
            ScoringSettings(**bad)
