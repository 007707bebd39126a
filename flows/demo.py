"""Flow: the demo, end to end on whatever the settings point at (by default the embedded ones)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.common import opened_workspace
from flows.labels import import_labels_flow
from flows.score import score_flow
from flows.train import train_flow
from mlc_core.jobs.demo import (
    DEMO_IMAGES,
    DEMO_LABELS_KEY,
    DemoOutcome,
    evaluate_holdout,
    prepare_demo_data,
)

# What the demo spends besides training: Prefect's start, drawing the images, scoring them.
DEMO_OVERHEAD_MINUTES = 1.0
DEMO_MIN_CROP_FRACTION = 0.5
DEMO_MIXUP_ALPHA = 0.2


@flow(name="mlc-demo")
def demo_flow(
    images: int = DEMO_IMAGES, epochs: int = 80, image_size: int = 96, minutes: float = 3.0
) -> DemoOutcome:
    """Make a synthetic data set, import labels, train, score, and measure on the hold-out.

    Training gets ``minutes`` less the demo's other steps as its time budget. It never learns
    from unlabelled images: the only unlabelled ones are the hold-out, which must stay unseen.
    """
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
    training = train_flow(
        epochs=epochs,
        image_size=image_size,
        time_budget_minutes=max(minutes - DEMO_OVERHEAD_MINUTES, 0.25),
        semi_supervised=False,
        # A crop can cut a shape out of the picture while its tag stays: with the milder
        # augmentation validation mAP reached 0.973 by epoch 12, with the scene defaults 0.940.
        min_crop_fraction=DEMO_MIN_CROP_FRACTION,
        mixup_alpha=DEMO_MIXUP_ALPHA,
    )
    scoring = score_flow(prefixes=[data.prefix])
    with opened_workspace() as workspace:
        evaluation = evaluate_holdout(workspace, data.holdout_truth)
    holdout_map = evaluation.metrics.get("mean_average_precision")
    logger.info(
        "hold-out mAP of %s: %s",
        evaluation.model_version,
        "-" if holdout_map is None else f"{holdout_map:.3f}",
    )
    return DemoOutcome(
        prefix=data.prefix, labels=labels, training=training, scoring=scoring, holdout=evaluation
    )
