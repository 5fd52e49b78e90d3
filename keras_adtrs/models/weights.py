"""Backbone weights: ImageNet (bounded download), a local file, none, or another ADTRS backbone.

- `load_backbone_weights(backbone, weights)`: ImageNet, a local weights file
  or random initialisation, into the ResNet stages of an `ADTRSBackbone`;
- `load_backbone(path)`: the `ADTRSBackbone` saved in a `.keras` file,
  alone or inside any ADTRS model; `copy_backbone(path, backbone)` copies its
  weights into another backbone (what `init_from` does).

The download is attempted in a daemon thread with a deadline, so an
unreachable network can never hang a run; on failure one loud warning is
printed and the backbone keeps its random initialisation, which is recorded
in the returned info dict (train writes it to config.json and metrics.json).
`KERAS_ADTRS_OFFLINE=1` skips the attempt (the same warning, no network).
"""

import os
import threading
import warnings
import zipfile

import keras

from keras_adtrs.errors import SettingError
from keras_adtrs.models.backbone import ADTRSBackbone

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


def load_backbone_weights(backbone, weights, timeout=DOWNLOAD_TIMEOUT_S):
    """Loads `weights` into the ResNet stages of an `ADTRSBackbone`; returns what happened.

    Args:
        backbone: an `ADTRSBackbone` (an `ADTRSModel`'s `backbone`).
        weights: `"imagenet"`, a path to a weights file (`.h5` in the
            keras.applications "notop" layout, or `.weights.h5`), or
            `None`/`"none"` for random initialisation.
        timeout: float. Seconds allowed for the ImageNet download.

    Returns:
        dict: `requested`, `source` (what the backbone holds now) and, when the
        request failed, `error`.

    Raises:
        SettingError: no ImageNet download for this architecture, or no such
            weights file.
    """
    if weights is None or str(weights).lower() == "none":
        return {"requested": None, "source": "random initialisation"}
    stages = backbone.stages
    if weights == "imagenet":
        if backbone.architecture not in IMAGENET_NOTOP:
            raise SettingError(
                "backbone_weights", f"imagenet: no ImageNet weights download for the {backbone.architecture!r} "
                "backbone; convert torchvision weights with keras_adtrs.convert instead"
            )
        fname, origin, file_hash = IMAGENET_NOTOP[backbone.architecture]
        try:
            path = _download(fname, origin, file_hash, timeout)
        except Exception as exc:  # keras.utils.get_file raises bare Exception on HTTP/URL errors
            message = (
                f"could not download ImageNet weights for the {backbone.architecture} backbone "
                f"({type(exc).__name__}: {exc}). THE BACKBONE STARTS FROM RANDOM WEIGHTS. "
                f"Pass a local copy of {fname} as the backbone weights to use pretrained weights."
            )
            warnings.warn(message, BackboneWeightsWarning, stacklevel=2)
            return {
                "requested": "imagenet",
                "source": "random initialisation (ImageNet download failed)",
                "error": f"{type(exc).__name__}: {exc}",
            }
        stages.load_weights(path)
        return {"requested": "imagenet", "source": f"imagenet ({path})"}
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise SettingError("backbone_weights", f"{path}: no such file")
    stages.load_weights(path)
    return {"requested": path, "source": f"file {os.path.abspath(path)}"}


#: Settings of two backbones that must agree for the weights of one to fit the other.
_MATCHING_SETTINGS = ("architecture", "input_normalization", "num_heads", "key_dim", "attn_ratio")


def backbone_in(loaded, path="model"):
    """The `ADTRSBackbone` of what `keras.saving.load_model` returned.

    Args:
        loaded: an `ADTRSBackbone`, an `ADTRSModel` (its `backbone`) or a
            model holding one (`PretrainingModel`: `.adtrs`).
        path: str. Named in the error.

    Raises:
        SettingError: it holds no ADTRS backbone.
    """
    for candidate in (loaded, getattr(loaded, "backbone", None), getattr(getattr(loaded, "adtrs", None), "backbone", None)):
        if isinstance(candidate, ADTRSBackbone):
            return candidate
    raise SettingError(
        "init_from", f"{path}: holds a {type(loaded).__name__}, not an ADTRS backbone "
        "(a model.keras written by keras_adtrs.train or keras_adtrs.pretrain, or a saved ADTRSBackbone)"
    )


def load_backbone(path):
    """The `ADTRSBackbone` saved in a `.keras` file (alone, or inside any ADTRS model).

    Raises:
        SettingError: no such file, not a `.keras` file, not loadable, or it
            holds no ADTRS backbone; the message names the file (setting
            `init_from`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SettingError("init_from", f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise SettingError("init_from", f"{path}: not a .keras file (not a zip archive)")
    try:
        loaded = keras.saving.load_model(path, compile=False)
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as exc:
        raise SettingError("init_from", f"{path}: cannot be loaded as a Keras model ({type(exc).__name__}: {exc})") from None
    return backbone_in(loaded, path)


def copy_backbone(path, backbone):
    """Copies the weights of the ADTRS backbone saved in `path` into `backbone` (the `init_from` rule).

    What is copied: every weight of the ResNet stages (exactly) and of the
    attention down-sampling block. When the crop sizes differ, the block's
    relative-position bias table (its shape depends on the crop) keeps its
    initialisation; the returned dict says so. Nothing of a head is read:
    the head and the score scale of the model being built come from its own
    labels.

    Args:
        path: str. A `.keras` file holding an ADTRS backbone (`load_backbone`).
        backbone: the `ADTRSBackbone` to initialise.

    Returns:
        dict: `path`, `backbone` and `attention_block` (what was copied),
        `crop_size` of the source.

    Raises:
        SettingError: see `load_backbone`; or the backbones are incompatible
            (another architecture, input normalisation or block shape): the
            message names the file and the difference.
    """
    source = load_backbone(path)
    differences = [
        f"{name} {getattr(source, name)!r} there, {getattr(backbone, name)!r} here"
        for name in _MATCHING_SETTINGS
        if getattr(source, name) != getattr(backbone, name)
    ]
    if differences:
        raise SettingError("init_from", f"{path}: incompatible backbone ({'; '.join(differences)})")
    backbone.stages.set_weights(source.stages.get_weights())
    kept = []
    for theirs, ours in zip(source.attention_block.weights, backbone.attention_block.weights):
        if theirs.path.split("/")[-1] != ours.path.split("/")[-1]:
            raise SettingError("init_from", f"{path}: attention block weights do not line up ({theirs.path} vs {ours.path})")
        if tuple(theirs.shape) == tuple(ours.shape):
            ours.assign(theirs.value)
        else:
            kept.append(ours.path.split("/")[-1])
    block = "copied" if not kept else (
        f"copied except {', '.join(kept)} (crop {source.crop_size} there, {backbone.crop_size} here: "
        "kept its initialisation)"
    )
    return {
        "path": os.path.abspath(os.fspath(path)),
        "crop_size": int(source.crop_size),
        "backbone": f"copied ({len(backbone.stages.weights)} arrays)",
        "attention_block": block,
        "head": "new: fitted to the new labels",
    }
