"""The one registry of data sets: name -> loader, imported only when used.

Every known set is listed here as a `"module:function"` string; nothing
registers itself on import, and a loader's module (TensorFlow Datasets for
the public sets) is imported only when that set is loaded:

- `default`: the embedded procedural set (`keras_adtrs.data.synthetic`), no
  TensorFlow;
- `csv`: your own images and scores (`keras_adtrs.data.csv_source`), no
  TensorFlow;
- `live_challenge`: the TFDS builder when TensorFlow is wanted and available,
  else the plain release reader (`keras_adtrs.data.live_challenge`); both read
  the release with the same code and give the same examples in the same order;
- `live_iqa`, `csiq`, `tid2013`, `kadid10k`, `koniq10k`: TFDS builders
  (`keras_adtrs.data.tfds`), which need TensorFlow.

Example:
>>> source = load_source("default", data_dir="/tmp/adtrs-data")  # doctest: +SKIP
>>> len(source), source.score_range  # doctest: +SKIP
(1500, (0.0, 100.0))
"""

import importlib
import importlib.util

from keras_adtrs.data.backend import uses_tensorflow
from keras_adtrs.defaults import PLAIN_DATASETS, TFDS_DATASETS
from keras_adtrs.errors import ADTRSError, DataSetError, SettingError

#: Sets built by TFDS builders (`keras_adtrs.data.tfds.<name>`).
TFDS_SETS = TFDS_DATASETS
_TFDS_LOADER = "keras_adtrs.data.tfds.sources:load_tfds_source"
#: Sets read without TensorFlow.
_PLAIN_LOADERS = {
    "default": "keras_adtrs.data.synthetic:load_default_source",
    "csv": "keras_adtrs.data.csv_source:load_csv_source",
    "live_challenge": "keras_adtrs.data.live_challenge:load_live_challenge",
}
#: Loaders added by `register_source` (your own sets, tests).
_ADDED = {}
assert set(_PLAIN_LOADERS) == set(PLAIN_DATASETS), "keras_adtrs.defaults.PLAIN_DATASETS lists every plain loader"


def _resolve(target):
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def register_source(name, loader=None):
    """Adds a data set: `loader(data_dir=None, manual_dir=None, **kwargs) -> IQASource`.

    Use as a decorator (`@register_source("mine")`) or call it with the
    loader. A name that is already known is refused.
    """
    if name in _PLAIN_LOADERS or name in TFDS_SETS:
        raise ValueError(f"data set {name!r} is built in; choose another name")

    def add(function):
        _ADDED[name] = function
        return function

    return add if loader is None else add(loader)


def available_sources():
    """Every data set name `load_source` knows, sorted."""
    return sorted(set(_PLAIN_LOADERS) | set(TFDS_SETS) | set(_ADDED))


def tensorflow_wanted():
    """Whether TFDS builders should be used when a set can be read either way.

    True on the TensorFlow backend (`keras_adtrs.data.backend.uses_tensorflow`)
    when TensorFlow Datasets is installed.
    """
    return uses_tensorflow() and importlib.util.find_spec("tensorflow_datasets") is not None


def load_source(name, data_dir=None, manual_dir=None, csv_path=None, tensorflow=None, **kwargs):
    """Loads a data set by name as an `IQASource` (see `available_sources()`).

    Args:
        name: str. The data set.
        data_dir: str or None. Where sets are prepared and cached (TFDS's
            data folder; the default set's cache).
        manual_dir: str or None. The folder holding a release's files (the
            image root for `csv`).
        csv_path: str or None. The scores CSV of the `csv` set.
        tensorflow: bool or None. Use TFDS builders (`True`), never
            (`False`: sets that need them fail with a clear error), or when
            `tensorflow_wanted()` (`None`, the default).
        **kwargs: further arguments of the set's loader (e.g. `seed` for
            `default`, `higher_is_better` for `csv`).

    Returns:
        An `IQASource`.

    Raises:
        SettingError: unknown name, a set that needs TensorFlow Datasets
            when it is not to be used, or a setting that does not apply.
        DataSetError: the set cannot be read (a missing or malformed release
            or scores file); the message names the set and the file.
    """
    if csv_path is not None and name != "csv" and name not in _ADDED:
        raise SettingError("csv", f"is for the csv data set, not {name!r}")
    loader, arguments = _loader(name, data_dir, manual_dir, csv_path, tensorflow)
    try:
        return loader(**arguments, **kwargs)
    except ADTRSError:
        raise
    except (OSError, ValueError) as exc:  # what the readers raise on a missing or malformed release
        raise DataSetError(f"data set {name!r}: {exc}") from exc


def _loader(name, data_dir, manual_dir, csv_path, tensorflow):
    """`(loader, keyword arguments)` of the set `name`."""
    if name in _ADDED:
        extra = {"csv_path": csv_path} if csv_path is not None else {}
        return _ADDED[name], {"data_dir": data_dir, "manual_dir": manual_dir, **extra}
    use_tfds = tensorflow_wanted() if tensorflow is None else bool(tensorflow)
    if name in TFDS_SETS and (use_tfds or name not in _PLAIN_LOADERS):
        if not use_tfds or importlib.util.find_spec("tensorflow_datasets") is None:
            plain = ", ".join(sorted(_PLAIN_LOADERS))
            raise SettingError(
                "dataset", f"{name!r} is built with TensorFlow Datasets, which is not installed or not to be used "
                f"here (JAX backend); without it use {plain}"
            )
        loader = _resolve(_TFDS_LOADER)
        return (lambda **kw: loader(name, **kw)), {"data_dir": data_dir, "manual_dir": manual_dir}
    if name == "csv":
        return _resolve(_PLAIN_LOADERS["csv"]), {"csv_path": csv_path, "data_dir": data_dir, "manual_dir": manual_dir}
    if name == "default":
        return _resolve(_PLAIN_LOADERS["default"]), {"data_dir": data_dir}
    if name == "live_challenge":
        return _resolve(_PLAIN_LOADERS["live_challenge"]), {"manual_dir": manual_dir}
    raise SettingError("dataset", f"unknown data set {name!r}; available: {', '.join(available_sources())}")
