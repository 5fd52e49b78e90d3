"""Tests of the field's split protocol: seeded splits by group (reference or image)."""

import numpy as np
import pytest

from keras_adtrs.data.splits import repeated_splits, split_by_group
from keras_adtrs.errors import SettingError


def _parts(split):
    return split.train, split.validation, split.test


def _groups():
    # 30 references with 4 distorted images each, in a shuffled order.
    rng = np.random.default_rng(123)
    return rng.permutation(np.repeat(np.arange(30), 4))


def test_every_index_in_exactly_one_part():
    groups = _groups()
    split = split_by_group(groups, seed=3)
    joined = np.concatenate(_parts(split))
    assert sorted(joined.tolist()) == list(range(len(groups)))
    for part in _parts(split):
        assert np.all(np.diff(part) > 0)  # sorted, no repeats


@pytest.mark.parametrize("seed", range(5))
def test_no_group_straddles_parts(seed):
    groups = _groups()
    split = split_by_group(groups, test_fraction=0.2, validation_fraction=0.1, seed=seed)
    train, validation, test = (set(groups[p].tolist()) for p in _parts(split))
    assert not train & validation and not train & test and not validation & test


@pytest.mark.parametrize(
    "test_fraction, validation_fraction, expected",
    [(0.2, 0.1, (22, 2, 6)), (0.5, 0.0, (15, 0, 15)), (0.1, 0.25, (20, 7, 3))],
)
def test_ratio_is_configurable(test_fraction, validation_fraction, expected):
    groups = _groups()
    split = split_by_group(groups, test_fraction=test_fraction, validation_fraction=validation_fraction, seed=0)
    counts = tuple(len(np.unique(groups[p])) for p in _parts(split))
    assert counts == expected  # groups per part: round(30 * test), round(rest * validation)
    assert [len(p) for p in _parts(split)] == [4 * c for c in expected]


def test_by_image_for_authentic_sets():
    split = split_by_group(np.arange(100), test_fraction=0.2, validation_fraction=0.0, seed=1)
    assert (len(split.train), len(split.validation), len(split.test)) == (80, 0, 20)


def test_same_seed_same_split_different_seeds_differ():
    groups = _groups()
    a, b = split_by_group(groups, seed=11), split_by_group(groups, seed=11)
    for x, y in zip(_parts(a), _parts(b)):
        np.testing.assert_array_equal(x, y)
    tests = {tuple(split_by_group(groups, seed=s).test.tolist()) for s in range(10)}
    assert len(tests) == 10


def test_same_split_on_any_machine():
    # numpy guarantees PCG64 streams and Generator.permutation are stable across
    # platforms, so these pinned arrays must hold everywhere.
    groups = np.repeat(np.arange(10), 2)
    split = split_by_group(groups, seed=0)
    assert split.train.tolist() == [0, 1, 2, 3, 4, 5, 10, 11, 14, 15, 16, 17, 18, 19]
    assert split.validation.tolist() == [6, 7]
    assert split.test.tolist() == [8, 9, 12, 13]
    split = split_by_group(np.arange(12), test_fraction=0.25, validation_fraction=0.0, seed=7)
    assert split.train.tolist() == [0, 1, 2, 3, 5, 7, 8, 9, 11]
    assert split.validation.tolist() == []
    assert split.test.tolist() == [4, 6, 10]


def test_group_labels_need_not_be_integers():
    names = np.array(["b.bmp", "a.bmp", "b.bmp", "c.bmp", "a.bmp", "d.bmp"])
    split = split_by_group(names, test_fraction=0.25, validation_fraction=0.0, seed=0)
    assert not set(names[split.train]) & set(names[split.test])


def test_repeated_splits_use_consecutive_seeds():
    groups = _groups()
    splits = repeated_splits(groups, num_splits=3, seed=5, test_fraction=0.3)
    for k, split in enumerate(splits):
        expected = split_by_group(groups, seed=5 + k, test_fraction=0.3)
        np.testing.assert_array_equal(split.test, expected.test)
    assert len({tuple(s.test.tolist()) for s in splits}) == 3


def test_to_json_with_names():
    split = split_by_group(np.arange(5), test_fraction=0.2, validation_fraction=0.0, seed=0)
    names = [f"img{i}.jpg" for i in range(5)]
    out = split.to_json(names)
    assert sorted(out["train"] + out["test"]) == sorted(names) and out["validation"] == []


@pytest.mark.parametrize("kwargs", [{"test_fraction": -0.1}, {"test_fraction": 1.0}, {"validation_fraction": 1.0}])
def test_bad_fractions_raise(kwargs):
    with pytest.raises(ValueError):
        split_by_group(np.arange(10), **kwargs)


def test_no_test_part_trains_on_everything():
    """`test_fraction=0`: a final model for use elsewhere; the validation part still selects the epoch."""
    split = split_by_group(np.arange(200), test_fraction=0.0, validation_fraction=0.1, seed=3)
    assert split.test.size == 0 and split.validation.size == 20 and split.train.size == 180


def test_kfold_by_group_tests_every_item_once_and_respects_groups():
    from keras_adtrs.data.splits import kfold_by_group

    groups = np.repeat(np.arange(23), 3)  # 23 references, 3 images each
    folds = kfold_by_group(groups, folds=5, validation_fraction=0.1, seed=4)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(len(groups)))  # every item tested exactly once
    sizes = sorted(len(np.unique(groups[f.test])) for f in folds)
    assert sizes[-1] - sizes[0] <= 1  # fold sizes differ by one group at most
    for fold in folds:
        parts = [set(groups[p].tolist()) for p in (fold.train, fold.validation, fold.test)]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]  # no group straddles
        assert len(fold.validation) and sorted(np.concatenate([fold.train, fold.validation, fold.test]).tolist()) == \
            list(range(len(groups)))
    # Stable under the seed; another seed gives other folds.
    again = kfold_by_group(groups, folds=5, validation_fraction=0.1, seed=4)
    assert all(np.array_equal(a.test, b.test) and np.array_equal(a.validation, b.validation) for a, b in zip(folds, again))
    other = kfold_by_group(groups, folds=5, validation_fraction=0.1, seed=5)
    assert any(not np.array_equal(a.test, b.test) for a, b in zip(folds, other))
    # The same folds on every machine: numpy's PCG64 permutation of the sorted groups (pinned values).
    pinned = [f.test.tolist() for f in kfold_by_group(np.arange(10), folds=3, validation_fraction=0, seed=0)]
    assert pinned == [[1, 4, 7, 9], [0, 3, 6], [2, 5, 8]]
    with pytest.raises(SettingError, match="folds must be a whole number from 2 to the 23 groups, got 24"):
        kfold_by_group(groups, folds=24)
    with pytest.raises(SettingError, match="folds must be"):
        kfold_by_group(groups, folds=1)
