"""Backbone weights: ImageNet (bounded download), a local file, or none.

The download is attempted in a daemon thread with a deadline, so an
unreachable network can never hang a run; on failure one loud warning is
printed and the backbone keeps its random initialisation, which is recorded
in the returned info dict (train writes it to config.json and metrics.json).
`KERAS_ADTRS_OFFLINE=1` skips the attempt (the same warning, no network).
"""

import os
import threading
import warnings

import keras

IMAGENET_NOTOP = {
    "resnet50": (
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "4d473c1dd8becc155b73f8504c6f6626",
    ),
}

DOWNLOAD_TIMEOUT_S = float(os.environ.get("KERAS_ADTRS_DOWNLOAD_TIMEOUT", "30"))


class BackboneWeightsWarning(UserWarning):
    """The requested backbone weights could not be loaded."""


def _download(fname, origin, file_hash, timeout):
    if os.environ.get("KERAS_ADTRS_OFFLINE", "") not in ("", "0"):
        raise ConnectionError("KERAS_ADTRS_OFFLINE is set: no download attempted")
    result = {}

    def target():
        try:
            result["path"] = keras.utils.get_file(
                fname, origin, cache_subdir="models", file_hash=file_hash
            )
        except Exception as exc:  # network errors come in many types; re-raised below
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"download of {origin} did not finish within {timeout:.0f} s")
    if "error" in result:
        raise result["error"]
    return result["path"]


def backbone_of(model):
    """The backbone sub-model of an `ADTRSModel`."""
    for layer in model.network.layers:
        if layer.name.startswith("resnet50"):
            return layer
    raise ValueError("this model has no resnet50 backbone layer")


def load_backbone_weights(model, weights, timeout=DOWNLOAD_TIMEOUT_S):
    """Loads `weights` into the backbone of `model`; returns what happened.

    Args:
        model: an `ADTRSModel`.
        weights: `"imagenet"`, a path to a weights file (`.h5` in the
            keras.applications "notop" layout, or `.weights.h5`), or
            `None`/`"none"` for random initialisation.
        timeout: float. Seconds allowed for the ImageNet download.

    Returns:
        dict: `requested`, `source` (what the backbone holds now) and, when the
        request failed, `error`.
    """
    if weights is None or str(weights).lower() == "none":
        return {"requested": None, "source": "random initialisation"}
    backbone = backbone_of(model)
    if weights == "imagenet":
        if model.backbone not in IMAGENET_NOTOP:
            raise ValueError(
                f"no ImageNet weights download for backbone {model.backbone!r}; "
                "convert torchvision weights with keras_adtrs.convert instead"
            )
        fname, origin, file_hash = IMAGENET_NOTOP[model.backbone]
        try:
            path = _download(fname, origin, file_hash, timeout)
        except Exception as exc:  # keras.utils.get_file raises bare Exception on HTTP/URL errors
            message = (
                f"could not download ImageNet weights for the {model.backbone} backbone "
                f"({type(exc).__name__}: {exc}). THE BACKBONE STARTS FROM RANDOM WEIGHTS. "
                "Pass --backbone-weights PATH with a local copy of "
                f"{fname} to use pretrained weights."
            )
            warnings.warn(message, BackboneWeightsWarning, stacklevel=2)
            return {
                "requested": "imagenet",
                "source": "random initialisation (ImageNet download failed)",
                "error": f"{type(exc).__name__}: {exc}",
            }
        backbone.load_weights(path)
        return {"requested": "imagenet", "source": f"imagenet ({path})"}
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    backbone.load_weights(path)
    return {"requested": path, "source": f"file {os.path.abspath(path)}"}


#: Layer of the ADTRS network that `init_from` copies besides the backbone.
ATTENTION_BLOCK = "attention_downsample"
#: Block settings that must agree for its weights to fit.
_BLOCK_SETTINGS = ("num_heads", "key_dim", "attn_ratio")


def _adtrs_of(loaded, path):
    """The `ADTRSModel` inside what `keras.saving.load_model` returned."""
    for candidate in (loaded, getattr(loaded, "adtrs", None)):
        if candidate is not None and hasattr(candidate, "network") and hasattr(candidate, "backbone"):
            return candidate
    raise ValueError(
        f"--init-from {path}: holds a {type(loaded).__name__}, not an ADTRS model "
        "(a model.keras written by keras_adtrs.train or keras_adtrs.pretrain)"
    )


def _read_saved_model(path):
    """Loads the `.keras` file at `path`; every failure becomes one clear error naming it."""
    import zipfile

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--init-from {path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"--init-from {path}: not a .keras file (not a zip archive)")
    try:
        return keras.saving.load_model(path, compile=False)
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"--init-from {path}: cannot be loaded as a Keras model ({type(exc).__name__}: {exc})") from None


def init_from(model, path):
    """Copies the backbone and attention-block weights of a saved ADTRS model into `model`.

    What is copied: every weight of the backbone (exactly) and of the
    attention down-sampling block. What is not: the head (`head_dense`,
    `score_dense`) and the score scale (`ScoreAffine`), which the new labels
    decide. When the crop sizes differ, the block's relative-position bias
    table (its shape depends on the crop) keeps its initialisation; the
    returned dict says so.

    Args:
        model: the `ADTRSModel` to initialise.
        path: str. A `.keras` file saved from an `ADTRSModel` (`train`,
            `pretrain`), or from a model holding one as `.adtrs`.

    Returns:
        dict: `path`, `backbone` and `attention_block` (what was copied),
        `crop_size` of the source.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a loadable `.keras` file, not an ADTRS model, or
            incompatible (another backbone, input normalisation or block
            shape); the message names the file and the difference.
    """
    source = _adtrs_of(_read_saved_model(path), path)
    differences = []
    for name in ("backbone", "input_normalization") + _BLOCK_SETTINGS:
        if getattr(source, name) != getattr(model, name):
            differences.append(f"{name} {getattr(source, name)!r} there, {getattr(model, name)!r} here")
    if differences:
        raise ValueError(f"--init-from {path}: incompatible model ({'; '.join(differences)})")
    backbone_of(model).set_weights(backbone_of(source).get_weights())
    source_block = source.network.get_layer(ATTENTION_BLOCK)
    target_block = model.network.get_layer(ATTENTION_BLOCK)
    kept = []
    for theirs, ours in zip(source_block.weights, target_block.weights):
        if theirs.path.split("/")[-1] != ours.path.split("/")[-1]:
            raise ValueError(f"--init-from {path}: attention block weights do not line up ({theirs.path} vs {ours.path})")
        if tuple(theirs.shape) == tuple(ours.shape):
            ours.assign(theirs.value)
        else:
            kept.append(ours.path.split("/")[-1])
    block = "copied" if not kept else (
        f"copied except {', '.join(kept)} (crop {source.crop_size} there, {model.crop_size} here: "
        "kept its initialisation)"
    )
    return {
        "path": os.path.abspath(os.fspath(path)),
        "crop_size": int(source.crop_size),
        "backbone": f"copied ({len(backbone_of(model).weights)} arrays)",
        "attention_block": block,
        "head": "new: fitted to the new labels",
    }
