"""Compute precision of ADTRS models: names, the device check, and the Keras dtype policy.

Three precisions, Keras dtype-policy names:

- `float32`: everything in float32 (the default);
- `mixed_bfloat16`: layers compute in bfloat16, variables stay float32, no
  loss scaling. For CPUs with AVX512-BF16 or AMX (`/proc/cpuinfo` flags
  `avx512_bf16`, `amx_bf16`), TPUs and GPUs of compute capability 8.0 or
  newer;
- `mixed_float16`: layers compute in float16 with loss scaling in training.
  For GPUs.

`auto` is not a fourth precision but a choice (`choose_precision`):
`mixed_bfloat16` where this machine runs bfloat16 fast (a CPU with
AVX512-BF16 or AMX, a TPU, a GPU of compute capability 8.0 or newer),
`float32` elsewhere. A model records the precision chosen, never `auto`.

Under both mixed precisions the score head, the loss terms, the L2
normalisation, the L2 pooling, the attention softmax and every BatchNorm
compute in float32 (`keras_adtrs.models.adtrs`, `keras_adtrs.models.layers`).

`check_precision(name)` raises `UnsupportedPrecisionError` naming the
precision and the device when the machine lacks it (unless
`KERAS_ADTRS_FORCE_PRECISION=1`: then it computes in it anyway, emulated and
slow, for tests and debugging); `set_precision(name)`
checks, then sets Keras' global dtype policy; `precision_scope(name)` sets it
for a `with` block (how `ADTRSModel` builds its network in the precision it
was given). The device is read once per process (`device_summary`).

Example:
>>> check_precision("float32")
'float32'
>>> with precision_scope("mixed_bfloat16"):  # doctest: +SKIP
...     model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None)
"""

import contextlib
import functools
import os

import keras

from keras_adtrs.defaults import AUTO_PRECISION, PRECISIONS
from keras_adtrs.errors import SettingError

#: /proc/cpuinfo flags of CPUs with native bfloat16 arithmetic.
CPU_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
#: GPUs from this compute capability on (NVIDIA Ampere) have bfloat16 units.
GPU_BFLOAT16_CAPABILITY = (8, 0)


#: Set to 1 to compute in a precision the device lacks (emulated, slow): for tests and debugging.
FORCE_VARIABLE = "KERAS_ADTRS_FORCE_PRECISION"


class UnsupportedPrecisionError(SettingError):
    """The precision asked for needs a device this machine does not have (setting `precision`)."""

    def __init__(self, message):
        super().__init__("precision", message)


def validate_precision(name):
    """Returns `name` when it is one of `PRECISIONS`; raises ValueError naming it otherwise."""
    if name not in PRECISIONS:
        raise SettingError("precision", f"must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name


def cpu_flags(path="/proc/cpuinfo"):
    """`(model name, set of flags)` of the first CPU in `path`; `("unknown CPU", set())` without it."""
    name, flags = "unknown CPU", set()
    try:
        with open(path) as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and name == "unknown CPU":
                    name = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return name, flags


def _gpu_capability_tensorflow(index):
    import tensorflow as tf  # the backend in use

    details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[index])
    return tuple(details.get("compute_capability") or ())


def _gpu_capability_jax(index):
    import jax  # the backend in use

    capability = getattr(jax.devices("gpu")[index], "compute_capability", "")
    return tuple(int(part) for part in str(capability).split(".") if part.isdigit())


def accelerators():
    """The GPUs and TPUs Keras sees: a list of `(kind, compute capability or ())`.

    Uses `keras.distribution.list_devices` (on TensorFlow this starts its
    context: call it after a distribution strategy is chosen).
    """
    found = []
    for kind in ("gpu", "tpu"):
        try:
            devices = keras.distribution.list_devices(kind)
        except (RuntimeError, ValueError):  # JAX raises when the platform is absent
            devices = []
        for index, device in enumerate(devices):
            if not str(device).lower().startswith(kind):
                continue  # TensorFlow falls back to CPUs
            capability = ()
            if kind == "gpu":
                backend = keras.backend.backend()
                if backend == "tensorflow":
                    capability = _gpu_capability_tensorflow(index)
                elif backend == "jax":
                    capability = _gpu_capability_jax(index)
            found.append((kind, capability))
    return found


@functools.lru_cache(maxsize=None)
def device_summary():
    """What decides the precisions: `(cpu name, cpu bfloat16 flags, accelerators)`."""
    name, flags = cpu_flags()
    return name, tuple(f for f in CPU_BFLOAT16_FLAGS if f in flags), tuple(accelerators())


def _describe(summary):
    name, bf16_flags, found = summary
    cpu = f"CPU {name!r} " + (f"with {'/'.join(bf16_flags)}" if bf16_flags else
                              f"without {'/'.join(CPU_BFLOAT16_FLAGS)}")
    if not found:
        return cpu + ", no GPU or TPU"
    parts = [f"{kind.upper()}" + (f" (compute capability {'.'.join(map(str, cap))})" if cap else "")
             for kind, cap in found]
    return cpu + ", " + ", ".join(parts)


def precision_support(name, summary=None):
    """`(supported, device description)` of precision `name` on this machine (or `summary`)."""
    validate_precision(name)
    summary = device_summary() if summary is None else summary
    _, bf16_flags, found = summary
    kinds = [kind for kind, _ in found]
    if name == "float32":
        ok = True
    elif name == "mixed_float16":
        ok = "gpu" in kinds
    else:
        ok = bool(bf16_flags) or "tpu" in kinds or any(
            kind == "gpu" and (not cap or cap >= GPU_BFLOAT16_CAPABILITY) for kind, cap in found)
    return ok, _describe(summary)


def choose_precision(name):
    """The precision `name` stands for on this machine: `auto` chosen from the device, any other as it is.

    Returns:
        `(precision, why)`: a name of `PRECISIONS` and, for `auto`, what decided
        it (the device); `why` is None for a precision given by name.

    Example:
    >>> choose_precision("float32")
    ('float32', None)
    """
    if name != AUTO_PRECISION:
        return validate_precision(name), None
    fast, device = precision_support("mixed_bfloat16")
    chosen = "mixed_bfloat16" if fast else "float32"
    return chosen, f"auto: {chosen} on {device}"


NEEDS = {
    "mixed_bfloat16": "a CPU with AVX512-BF16 or AMX (/proc/cpuinfo flag avx512_bf16 or amx_bf16), a TPU, "
                      "or a GPU of compute capability 8.0 or newer",
    "mixed_float16": "a GPU",
}


def check_precision(name):
    """Returns `name` (`auto`: the precision chosen) when this machine computes in it; raises otherwise.

    Raises:
        ValueError: `name` is not one of `PRECISIONS`.
        UnsupportedPrecisionError: the device lacks it; the message names the
            precision, what it needs and what this machine has.
    """
    name = choose_precision(name)[0]
    ok, device = precision_support(name)
    if not ok and os.environ.get(FORCE_VARIABLE, "") in ("", "0"):
        raise UnsupportedPrecisionError(
            f"{name!r} needs {NEEDS[name]}; this machine has: {device}. Use float32"
        )
    return name


def set_precision(name):
    """Checks `name` on this device, then makes it Keras' global dtype policy; returns it.

    Models built afterwards compute in it (`ADTRSModel` records it in its
    config, so a saved model loads in the precision it was trained in).
    """
    keras.config.set_dtype_policy(check_precision(name))
    return name


def current_precision():
    """The name of Keras' global dtype policy (`"float32"` unless set)."""
    return keras.config.dtype_policy().name


@contextlib.contextmanager
def precision_scope(name):
    """Keras' global dtype policy set to `name` (validated, not device-checked) for a `with` block."""
    validate_precision(name)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield name
    finally:
        keras.config.set_dtype_policy(previous)
