"""Seeded splits by group (reference image or image), identical on every machine.

Splits use `numpy.random.Generator(PCG64(seed))` permutations of the sorted
unique group ids, which numpy guarantees to be stable across platforms.
"""

import dataclasses

import numpy as np

from keras_adtrs.errors import SettingError


@dataclasses.dataclass(frozen=True)
class Split:
    """Index arrays into a source: `train`, `validation` and `test` (sorted)."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    def to_json(self, names=None):
        pick = (lambda idx: [names[i] for i in idx]) if names is not None else (lambda idx: idx.tolist())
        return {"train": pick(self.train), "validation": pick(self.validation), "test": pick(self.test)}


def _partition(groups, fraction, rng):
    unique = np.unique(groups)
    order = rng.permutation(len(unique))
    count = int(round(len(unique) * fraction))
    if len(unique) >= 2:
        count = min(max(count, 1), len(unique) - 1)
    chosen = set(unique[order[:count]].tolist())
    mask = np.array([g in chosen for g in groups.tolist()], dtype=bool)
    return mask


def split_by_group(groups, test_fraction=0.2, validation_fraction=0.1, seed=0):
    """Splits items so that no group straddles two parts.

    Args:
        groups: array `(N,)` of group ids (reference ids, or item indices).
        test_fraction: float. Share of groups held out for test; `0` holds out
            none (every image trains or validates: a final model for use
            elsewhere). Defaults to `0.2`.
        validation_fraction: float. Share of the remaining (training) groups
            carved out for validation (model selection). `0` gives none.
            Defaults to `0.1`.
        seed: int. Defaults to `0`.

    Returns:
        A `Split` of sorted index arrays.
    """
    groups = np.asarray(groups)
    if not 0 <= test_fraction < 1:
        raise SettingError("test_fraction", f"must be in [0, 1), got {test_fraction}")
    if not 0 <= validation_fraction < 1:
        raise SettingError("validation_fraction", f"must be in [0, 1), got {validation_fraction}")
    rng = np.random.Generator(np.random.PCG64(seed))
    test_mask = _partition(groups, test_fraction, rng) if test_fraction > 0 else np.zeros(len(groups), bool)
    rest = np.flatnonzero(~test_mask)
    validation = np.array([], dtype=np.int64)
    if validation_fraction > 0 and len(np.unique(groups[rest])) >= 2:
        val_mask = _partition(groups[rest], validation_fraction, rng)
        validation = rest[val_mask]
        rest = rest[~val_mask]
    return Split(
        train=np.sort(rest).astype(np.int64),
        validation=np.sort(validation).astype(np.int64),
        test=np.sort(np.flatnonzero(test_mask)).astype(np.int64),
    )


def repeated_splits(groups, num_splits=10, seed=0, **kwargs):
    """`num_splits` splits with seeds `seed, seed + 1, ...`."""
    return [split_by_group(groups, seed=seed + k, **kwargs) for k in range(num_splits)]


def kfold_by_group(groups, folds=5, validation_fraction=0.1, seed=0):
    """K-fold cross-validation by group: every item is in exactly one test fold.

    The groups (sorted unique ids) are permuted with `seed` and dealt to the
    folds in turn, so fold sizes differ by at most one group and no group
    straddles two folds. Each fold's other groups are its training part,
    from which a seeded `validation_fraction` of the groups is carved out to
    select the epoch: never the test fold. The same `groups` and `seed` give
    the same folds on every machine, so every row of a comparison meets the
    same folds.

    Args:
        groups: array `(N,)` of group ids (reference ids, or item indices).
        folds: int. Number of folds, from 2 to the number of groups.
        validation_fraction: float. Share of each fold's training groups
            used for validation; `0` gives none. Defaults to `0.1`.
        seed: int. Defaults to `0`.

    Returns:
        list of `folds` `Split`s.

    Example:
    >>> [len(s.test) for s in kfold_by_group(np.arange(10), folds=3)]
    [4, 3, 3]
    """
    groups = np.asarray(groups)
    unique = np.unique(groups)
    if isinstance(folds, bool) or int(folds) != folds or not 2 <= folds <= len(unique):
        raise SettingError("folds", f"must be a whole number from 2 to the {len(unique)} groups, got {folds!r}")
    if not 0 <= validation_fraction < 1:
        raise SettingError("validation_fraction", f"must be in [0, 1), got {validation_fraction}")
    rng = np.random.Generator(np.random.PCG64(seed))
    fold_of_group = dict(zip(unique[rng.permutation(len(unique))].tolist(), np.arange(len(unique)) % int(folds)))
    fold_of_item = np.array([fold_of_group[g] for g in groups.tolist()], np.int64)
    splits = []
    for k in range(int(folds)):
        test = np.flatnonzero(fold_of_item == k)
        rest = np.flatnonzero(fold_of_item != k)
        validation = np.array([], dtype=np.int64)
        if validation_fraction > 0 and len(np.unique(groups[rest])) >= 2:
            val_mask = _partition(groups[rest], validation_fraction, np.random.Generator(np.random.PCG64([seed, k])))
            validation, rest = rest[val_mask], rest[~val_mask]
        splits.append(Split(train=np.sort(rest).astype(np.int64), validation=np.sort(validation).astype(np.int64),
                            test=np.sort(test).astype(np.int64)))
    return splits
