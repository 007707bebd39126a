from __future__ import annotations

from typing import Any

import pytest

from mlc_core.model.promotion import decide_promotion


def metrics(**average_precision: float | None) -> dict[str, Any]:
    """A metrics dict as evaluate_predictions returns it, reduced to what promotion reads."""
    defined = [ap for ap in average_precision.values() if ap is not None]
    return {
        "mean_average_precision": sum(defined) / len(defined) if defined else None,
        "average_precision": average_precision,
    }


def decide(candidate: dict[str, Any], champion: dict[str, Any] | None) -> Any:
    return decide_promotion(candidate, champion, margin=0.005, max_class_ap_drop=0.05)


def test_first_model_is_promoted_when_there_is_no_champion() -> None:
    decision = decide(metrics(sea=0.5), None)

    assert decision.promote
    assert "no champion yet" in decision.reason


def test_candidate_that_beats_the_margin_without_class_drops_is_promoted() -> None:
    decision = decide(metrics(sea=0.93, sky=0.93), metrics(sea=0.91, sky=0.91))

    assert decision.promote
    assert decision.reason == (
        "candidate mAP 0.930 beats champion mAP 0.910 by 0.020 (margin 0.005) "
        "and no class AP dropped more than 0.05"
    )


def test_candidate_gaining_exactly_the_margin_is_promoted() -> None:
    decision = decide(metrics(sea=0.915), metrics(sea=0.91))

    assert decision.promote


def test_candidate_that_does_not_beat_the_margin_is_kept_out() -> None:
    decision = decide(metrics(sea=0.912), metrics(sea=0.91))

    assert not decision.promote
    assert decision.reason == (
        "candidate mAP 0.912 does not beat champion mAP 0.910 by the required margin 0.005"
    )


def test_candidate_that_hurts_one_class_too_much_is_kept_out() -> None:
    decision = decide(
        metrics(sea=0.88, sky=0.99, tree=0.99), metrics(sea=0.95, sky=0.90, tree=0.90)
    )

    assert not decision.promote
    assert (
        decision.reason == "class 'sea' AP dropped from 0.950 to 0.880 (more than the allowed 0.05)"
    )


def test_reason_names_the_worst_dropped_class_and_counts_the_others() -> None:
    decision = decide(
        metrics(sea=0.80, sky=0.85, tree=1.0, road=1.0),
        metrics(sea=0.90, sky=0.99, tree=0.5, road=0.5),
    )

    assert not decision.promote
    assert "class 'sky' AP dropped from 0.990 to 0.850" in decision.reason
    assert "and 1 more class(es) dropped too" in decision.reason


def test_reason_reports_both_a_missed_margin_and_a_class_drop() -> None:
    decision = decide(metrics(sea=0.80, sky=0.90), metrics(sea=0.95, sky=0.80))

    assert not decision.promote
    assert decision.reason.startswith("candidate mAP 0.850 does not beat champion mAP 0.875")
    assert "class 'sea' AP dropped from 0.950 to 0.800" in decision.reason


def test_classes_without_a_defined_ap_are_left_out_of_the_comparison() -> None:
    decision = decide(metrics(sea=0.93, snow=None), metrics(sea=0.91, snow=0.99))

    assert decision.promote
    assert "by 0.020" in decision.reason


def test_added_and_removed_classes_are_left_out_and_named_in_the_reason() -> None:
    # Over all its classes the candidate's mAP would be lower; over the shared one it wins.
    decision = decide(metrics(sea=0.93, snow=0.2), metrics(sea=0.91, road=0.99))

    assert decision.promote
    assert decision.reason.endswith(
        "the class lists differ (the candidate adds 'snow' and drops 'road'), so mAP and "
        "class AP were compared over the 1 class(es) both have with a defined AP"
    )


def test_models_sharing_no_class_are_not_promoted_automatically() -> None:
    decision = decide(metrics(snow=0.99), metrics(road=0.5))

    assert not decision.promote
    assert "cannot be compared" in decision.reason


def test_metrics_without_average_precision_are_refused() -> None:
    with pytest.raises(ValueError, match="champion metrics have no 'average_precision'"):
        decide(metrics(sea=0.9), {"mean_average_precision": 0.9})
