from __future__ import annotations

import numpy as np
import pytest

from mlc_core.model.split import DataSplit, split_dataset

VALIDATION_FRACTION = 0.15
TEST_FRACTION = 0.15
PREVALENCES = (0.5, 0.25, 0.1, 0.05, 0.02)


def synthetic_labels(num_images: int = 600) -> tuple[list[str], np.ndarray]:
    """600 images, 5 classes from common to rare; some images carry no label at all."""
    rng = np.random.default_rng(7)
    keys = [f"images/{i:04d}.jpg" for i in range(num_images)]
    labels = (rng.random((num_images, len(PREVALENCES))) < PREVALENCES).astype(np.float32)
    return keys, labels


def split(keys: list[str], labels: np.ndarray, seed: int = 0) -> DataSplit:
    return split_dataset(
        keys,
        labels,
        validation_fraction=VALIDATION_FRACTION,
        test_fraction=TEST_FRACTION,
        seed=seed,
    )


def rows_of(part: list[str], keys: list[str], labels: np.ndarray) -> np.ndarray:
    position = {key: i for i, key in enumerate(keys)}
    return labels[[position[key] for key in part]]


def test_split_does_not_depend_on_input_order() -> None:
    keys, labels = synthetic_labels()
    permutation = np.random.default_rng(1).permutation(len(keys))

    shuffled = split([keys[i] for i in permutation], labels[permutation])

    assert shuffled == split(keys, labels)


def test_split_changes_with_the_seed() -> None:
    keys, labels = synthetic_labels()

    assert split(keys, labels, seed=1).test != split(keys, labels, seed=2).test


def test_parts_are_disjoint_and_hold_every_key_once() -> None:
    keys, labels = synthetic_labels()

    result = split(keys, labels)

    together = result.train + result.validation + result.test
    assert sorted(together) == sorted(keys)
    assert len(set(together)) == len(keys)


def test_each_part_is_sorted() -> None:
    keys, labels = synthetic_labels()
    reversed_keys = keys[::-1]

    result = split(reversed_keys, labels[::-1])

    for part in (result.train, result.validation, result.test):
        assert part == sorted(part)


def test_part_sizes_follow_the_fractions() -> None:
    keys, labels = synthetic_labels()

    result = split(keys, labels)

    assert len(result.validation) == pytest.approx(VALIDATION_FRACTION * len(keys), abs=2)
    assert len(result.test) == pytest.approx(TEST_FRACTION * len(keys), abs=2)


def test_every_class_is_spread_across_parts_in_proportion() -> None:
    keys, labels = synthetic_labels()

    result = split(keys, labels)

    totals = labels.sum(axis=0)
    for part, fraction in (
        (result.train, 1 - VALIDATION_FRACTION - TEST_FRACTION),
        (result.validation, VALIDATION_FRACTION),
        (result.test, TEST_FRACTION),
    ):
        counts = rows_of(part, keys, labels).sum(axis=0)
        np.testing.assert_allclose(counts, fraction * totals, atol=1.0)


def test_images_without_labels_are_spread_in_proportion() -> None:
    keys, labels = synthetic_labels()
    unlabeled = {key for key, row in zip(keys, labels, strict=True) if not row.any()}

    result = split(keys, labels)

    in_test = len(unlabeled.intersection(result.test))
    assert in_test == pytest.approx(TEST_FRACTION * len(unlabeled), abs=2)


def test_class_with_three_positives_gets_one_in_each_part() -> None:
    keys, labels = synthetic_labels(60)
    labels[:, 4] = 0
    labels[[3, 17, 42], 4] = 1

    result = split(keys, labels)

    for part in (result.train, result.validation, result.test):
        assert rows_of(part, keys, labels)[:, 4].sum() == 1


def test_three_images_give_one_to_each_part() -> None:
    keys = ["a.jpg", "b.jpg", "c.jpg"]

    result = split(keys, np.array([[1, 0], [1, 1], [0, 0]]))

    assert [len(result.train), len(result.validation), len(result.test)] == [1, 1, 1]


def test_fewer_than_three_images_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 3 labeled images"):
        split(["a.jpg", "b.jpg"], np.array([[1], [0]]))


def test_duplicate_key_is_refused_by_name() -> None:
    keys = ["a.jpg", "b.jpg", "a.jpg", "c.jpg"]

    with pytest.raises(ValueError, match=r"'a\.jpg' appears more than once"):
        split(keys, np.zeros((4, 2)))


def test_label_rows_must_match_the_keys() -> None:
    with pytest.raises(ValueError, match="3 rows but there are 4 keys"):
        split(["a", "b", "c", "d"], np.zeros((3, 2)))


def test_labels_must_be_zero_or_one() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        split(["a", "b", "c"], np.array([[0.2], [1.0], [0.0]]))


def test_fractions_must_leave_images_for_training() -> None:
    with pytest.raises(ValueError, match="less than 1"):
        split_dataset(
            ["a", "b", "c"], np.zeros((3, 1)), validation_fraction=0.5, test_fraction=0.5, seed=0
        )


def test_fractions_must_be_positive() -> None:
    with pytest.raises(ValueError, match="test_fraction must be between 0 and 1"):
        split_dataset(
            ["a", "b", "c"], np.zeros((3, 1)), validation_fraction=0.2, test_fraction=0.0, seed=0
        )
