"""The parts of the quality benchmark (``python -m benchmarks.quality PART``): the default over
seeds, the learning curve supervised vs semi-supervised, and the imbalance comparison."""

from __future__ import annotations

import hashlib
import statistics

from benchmarks.quality import (
    RARE_SHARE,
    REFERENCE_BACKBONE,
    REFERENCE_IMAGE_SIZE,
    Prepared,
    run_quality,
    run_speed,
)
from mlc_core.settings import TrainingSettings

HEADLINE = (
    ("mAP", "mean_average_precision"),
    ("validation mAP", "validation_map"),
    ("micro F1", "micro_f1"),
    ("macro F1", "macro_f1"),
    ("hamming loss", "hamming_loss"),
    ("subset accuracy", "subset_accuracy"),
    ("training seconds", "training_seconds"),
)


def _spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {spread:.4f}"


def part_default(prepared: Prepared, settings: TrainingSettings, seeds: list[int]) -> None:
    """The default at 100 % of the training labels over several training seeds, and speed."""
    results = []
    for seed in seeds:
        print(f"\n[default] training seed {seed}")
        results.append(run_quality(prepared, settings.model_copy(update={"seed": seed})))
        print(f"  seed {seed}: mAP {results[-1]['mean_average_precision']:.4f}")
    print(f"\n[default] 100 % labels, {len(seeds)} seeds (mean ± standard deviation)")
    for name, key in HEADLINE:
        print(f"  {name:<18} {_spread([r[key] for r in results])}")
    for name in prepared.classes:
        print(f"  AP {name:<15} {_spread([r['average_precision'][name] for r in results])}")
    last = results[-1]
    print(
        f"  with top-class fallback (seed {seeds[-1]}): hamming loss "
        f"{last['fallback_hamming_loss']:.4f}, subset accuracy "
        f"{last['fallback_subset_accuracy']:.4f} (an option, off by default)"
    )
    ours, reference = run_speed(last["model"], len(prepared.classes))
    print(
        f"  inference {settings.backbone} @ {settings.scoring_image_size} px (trained at "
        f"{settings.image_size})   {ours:.0f} images/s"
    )
    print(
        f"  inference {REFERENCE_BACKBONE} @ {REFERENCE_IMAGE_SIZE} px   {reference:.0f} images/s"
    )
    print(f"  speed ratio (default / reference) {ours / reference:.2f}")


def part_curve(prepared: Prepared, settings: TrainingSettings, fractions: list[float]) -> None:
    """mAP at shares of the training labels, supervised and semi-supervised, one seed."""
    rows = []
    for fraction in fractions:
        row = [f"{fraction:.0%}"]
        for semi in (False, True):
            mode = "semi-supervised" if semi else "supervised"
            print(f"\n[curve] {fraction:.0%} labels, {mode}")
            result = run_quality(
                prepared,
                settings.model_copy(update={"semi_supervised": semi}),
                label_fraction=fraction,
                verbose=False,
            )
            used = result["semi_supervised"].get("used_images", 0)
            print(
                f"  mAP {result['mean_average_precision']:.4f}, macro F1 "
                f"{result['macro_f1']:.4f}, {result['training_seconds']:.0f} s, "
                f"{used} pseudo-labelled images",
                flush=True,
            )
            row.append(f"{result['mean_average_precision']:.4f}")
        rows.append(row)
    print("\n[curve] test mAP by share of training labels (one seed)")
    print("  labels  supervised  semi-supervised")
    for share, supervised, semi in rows:
        print(f"  {share:>6}  {supervised:>10}  {semi:>15}")


def imbalanced(prepared: Prepared, rare: str, share: float) -> Prepared:
    """``prepared`` without enough of the images carrying ``rare`` that it is ``share`` of
    the images (the same images leave every part of the split)."""
    column = prepared.classes.index(rare)
    carrying = [key for key, row in zip(prepared.keys, prepared.labels, strict=True) if row[column]]
    others = len(prepared.keys) - len(carrying)
    keep_count = round(share * others / (1 - share))
    ordered = sorted(carrying, key=lambda key: hashlib.sha256(f"rare:{key}".encode()).digest())
    dropped = set(ordered[keep_count:])
    rows = [i for i, key in enumerate(prepared.keys) if key not in dropped]
    split = prepared.split
    return Prepared(
        [prepared.keys[i] for i in rows],
        prepared.images[rows],
        prepared.labels[rows],
        prepared.classes,
        type(split)(
            *(
                [k for k in part if k not in dropped]
                for part in (split.train, split.validation, split.test)
            )
        ),
        prepared.decode_seconds,
        None if prepared.scoring_images is None else prepared.scoring_images[rows],
    )


def part_imbalance(
    prepared: Prepared, settings: TrainingSettings, rare: str, losses: list[str]
) -> None:
    """Each loss on natural_scene with ``rare`` cut to 5 % positives: its AP and macro F1."""
    variant = imbalanced(prepared, rare, RARE_SHARE)
    column = variant.classes.index(rare)
    print(
        f"\n[imbalance] {rare} cut to {RARE_SHARE:.0%} of {len(variant.keys)} images "
        f"({int(variant.labels[:, column].sum())} positives)"
    )
    rows = []
    for loss in losses:
        result = run_quality(variant, settings.model_copy(update={"loss": loss}), verbose=False)
        rows.append((loss, result))
        print(
            f"  {loss:<13} AP {rare} {result['average_precision'][rare]:.4f}, macro F1 "
            f"{result['macro_f1']:.4f}, mAP {result['mean_average_precision']:.4f}",
            flush=True,
        )
    print(f"\n[imbalance] loss, AP of {rare}, macro F1, mAP")
    for loss, result in rows:
        print(
            f"  {loss:<13} {result['average_precision'][rare]:.4f}  {result['macro_f1']:.4f}  "
            f"{result['mean_average_precision']:.4f}"
        )
