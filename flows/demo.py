"""Flow: the demo, end to end on whatever the settings point at (by default the embedded ones)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.common import opened_workspace
from flows.labels import import_labels_flow
from flows.score import score_flow
from flows.train import train_flow
from mlc_core.jobs.demo import DEMO_LABELS_KEY, DemoOutcome, evaluate_holdout, prepare_demo_data


@flow(name="mlc-demo")
def demo_flow(images: int = 320, epochs: int = 15, image_size: int = 64) -> DemoOutcome:
    """Make a synthetic data set, import labels, train, score, and measure on the hold-out."""
    logger = get_run_logger()
    with opened_workspace() as workspace:
        data = prepare_demo_data(workspace, images=images)
    logger.info(
        "demo data: %d images under %s (%d new), %d labelled, %d held out",
        images,
        data.prefix,
        data.written,
        data.labelled,
        len(data.holdout_truth),
    )
    labels = import_labels_flow(store_key=DEMO_LABELS_KEY)
    training = train_flow(epochs=epochs, image_size=image_size)
    scoring = score_flow(prefixes=[data.prefix])
    with opened_workspace() as workspace:
        evaluation = evaluate_holdout(workspace, data.holdout_truth)
    logger.info(
        "hold-out mAP of %s: %s",
        evaluation.model_version,
        evaluation.metrics.get("mean_average_precision"),
    )
    return DemoOutcome(
        prefix=data.prefix, labels=labels, training=training, scoring=scoring, holdout=evaluation
    )
