"""Loading saved ADTRS models: `load_model` and what it raises.

Importing `keras_adtrs.models` registers every serializable class (the layers,
`ADTRSBackbone`, `ADTRSModel`, `PartwiseAdam`, under the names
`"keras_adtrs>ClassName"`), which `keras.saving.load_model` needs; this
module's `load_model` does both. The registered names never changed, so
files saved by earlier versions load: those whose configs name the old
module paths (`keras_adtrs.model`, `keras_adtrs.layers`), and those saved
before the backbone/task split, whose flat configs `ADTRSModel.from_config`
reads.
"""

import zipfile

import keras

from keras_adtrs.models import adtrs, backbone, fine_tuning, layers  # noqa: F401  (registers the classes)

#: What `load_model` raises for a file that is not a loadable model (not a
#: zip, no config.json, an unknown class, unreadable): the commands report them.
LOAD_ERRORS = (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile)


def load_model(path, compile=False, **kwargs):
    """Loads a `.keras` file saved from an `ADTRSModel` (or any model holding our layers).

    Args:
        path: str or path. The `.keras` file.
        compile: bool. Restore the training configuration too. Defaults to
            `False` (scoring needs none).
        **kwargs: further `keras.saving.load_model` arguments.

    Returns:
        The model (an `ADTRSModel` for files saved from one).

    Example:
    >>> model = keras_adtrs.load_model("runs/default-X/model.keras")  # doctest: +SKIP
    """
    return keras.saving.load_model(path, compile=compile, **kwargs)
