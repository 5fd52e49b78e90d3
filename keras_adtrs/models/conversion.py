"""Converts the ADTRS authors' PyTorch weights (and torchvision ResNet50) to Keras.

The authors' model (github MAS94/ADTRS, `models.py` `Net`) is a torchvision
ResNet50 (`model.*`), one EfficientFormerV2 `Attention4DDownsample` block
(`transformer.*`) and two linear layers (`fc2`: 3840 -> 2048, `fc`:
4096 -> 1). `from_torch_state_dict` places every one of its tensors in an
`ADTRSModel(backbone="resnet50_v1_5", layer4_pooling="top_left")`, which then
computes what their code computes (checked against a numeric fixture made
with their code, `tests/test_convert.py`).

Layouts: conv `(out, in, kh, kw)` -> Keras `(kh, kw, in, out)`; depthwise
conv `(C, 1, kh, kw)` -> `(kh, kw, C, 1)`; linear `(out, in)` -> `(in, out)`;
BatchNorm `weight, bias, running_mean, running_var` -> `gamma, beta,
moving_mean, moving_variance`. No PyTorch is needed: the state dict is a
mapping of names to arrays (torch tensors are accepted too).

The command line is `python -m keras_adtrs.convert` (torch needed for
`.pth`/`.pt` files only).
"""

import itertools
import math
import os

import numpy as np

from keras_adtrs.models.adtrs import ADTRSModel
from keras_adtrs.models.backbone import ADTRSBackbone
from keras_adtrs.models.resnet import RESNET50_BLOCKS

#: Parameters of the authors' model deliberately not converted: BatchNorm step
#: counters, the fixed L2-pooling filters and bias-index buffer (rebuilt by the
#: Keras layers) and the backbone's unused ImageNet classifier.
IGNORED_SUFFIXES = ("num_batches_tracked", "attention_bias_idxs")
IGNORED_PREFIXES = ("model.fc.", "L2pooling")

_BN_FIELDS = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)
#: Grid side of the authors' attention block (`resolution=7`, crop 224).
TORCH_GRID_SIZE = 7


# ------------------------------------------------------------------ key plans
def _backbone_plan(prefix):
    """`[(torch_key, keras_layer_name, attribute, transform)]` of a ResNet50."""
    plan = []

    def conv(torch_name, keras_name):
        plan.append((f"{prefix}{torch_name}.weight", keras_name, "kernel", "conv"))

    def bn(torch_name, keras_name):
        for field, attribute in _BN_FIELDS:
            plan.append((f"{prefix}{torch_name}.{field}", keras_name, attribute, "vector"))

    conv("conv1", "conv1")
    bn("bn1", "bn1")
    for stage, blocks in enumerate(RESNET50_BLOCKS, start=1):
        for block in range(blocks):
            t, k = f"layer{stage}.{block}", f"layer{stage}_{block}"
            for i in (1, 2, 3):
                conv(f"{t}.conv{i}", f"{k}_conv{i}")
                bn(f"{t}.bn{i}", f"{k}_bn{i}")
            if block == 0:
                conv(f"{t}.downsample.0", f"{k}_downsample_0")
                bn(f"{t}.downsample.1", f"{k}_downsample_1")
    return plan


def _attention_plan(prefix="transformer."):
    """`[(torch_key, sublayer, attribute, transform)]` of `AttentionDownsample`."""
    plan = [(f"{prefix}attention_biases", None, "attention_biases", "attention_biases")]

    def conv(torch_name, sublayer, transform="conv"):
        plan.append((f"{prefix}{torch_name}.weight", sublayer, "kernel", transform))
        plan.append((f"{prefix}{torch_name}.bias", sublayer, "bias", "vector"))

    def bn(torch_name, sublayer):
        for field, attribute in _BN_FIELDS:
            plan.append((f"{prefix}{torch_name}.{field}", sublayer, attribute, "vector"))

    conv("q.local.0", "query_local", "depthwise")
    conv("q.proj.0", "query_proj")
    bn("q.proj.1", "query_bn")
    conv("k.0", "key_proj")
    bn("k.1", "key_bn")
    conv("v.0", "value_proj")
    bn("v.1", "value_bn")
    conv("v_local.0", "value_local", "depthwise")
    bn("v_local.1", "value_local_bn")
    conv("proj.1", "output_proj")
    bn("proj.2", "output_bn")
    return plan


_HEAD_PLAN = (
    ("fc2.weight", "head_dense", "kernel", "linear"),
    ("fc2.bias", "head_dense", "bias", "vector"),
    ("fc.weight", "score_dense", "kernel", "linear"),
    ("fc.bias", "score_dense", "bias", "vector"),
)


def _is_ignored(key):
    return key.endswith(IGNORED_SUFFIXES) or key.startswith(IGNORED_PREFIXES)


def _strip_module_prefix(state_dict):
    """Drops the `module.` prefix `nn.DataParallel` adds to every key."""
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _check_keys(state_dict, expected, ignored, what):
    """Raises ValueError naming every unknown and every missing key."""
    expected = set(expected)
    unknown = sorted(k for k in state_dict if k not in expected and not ignored(k))
    missing = sorted(k for k in expected if k not in state_dict)
    if unknown or missing:
        lines = [f"the state dict does not match {what}:"]
        if missing:
            lines.append(f"missing keys ({len(missing)}): " + ", ".join(missing))
        if unknown:
            lines.append(f"unknown keys ({len(unknown)}): " + ", ".join(unknown))
        raise ValueError("\n".join(lines))


# --------------------------------------------------------------- conversion
def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype="float32")


def _transform(array, transform, key):
    if transform == "conv":
        if array.ndim != 4:
            raise ValueError(f"{key}: expected a 4-D conv weight, got shape {array.shape}")
        return array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if transform == "depthwise":
        if array.ndim != 4 or array.shape[1] != 1:
            raise ValueError(f"{key}: expected a depthwise weight (C, 1, kh, kw), got {array.shape}")
        return array.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    if transform == "linear":
        if array.ndim != 2:
            raise ValueError(f"{key}: expected a 2-D linear weight, got shape {array.shape}")
        return array.T
    return array


def _assign(variable, array, key):
    if tuple(variable.shape) != tuple(array.shape):
        raise ValueError(
            f"{key}: shape {tuple(array.shape)} (after layout conversion) does not fit "
            f"the Keras weight {variable.path} of shape {tuple(variable.shape)}"
        )
    variable.assign(array)


def _bias_offsets(grid_size):
    """Offsets `(dr, dc)` of `AttentionDownsample`'s bias table, in id order."""
    query_size = math.ceil(grid_size / 2)
    stride = math.ceil(grid_size / query_size)
    offsets = {}
    keys = list(itertools.product(range(grid_size), range(grid_size)))
    for qr, qc in itertools.product(range(query_size), range(query_size)):
        for kr, kc in keys:
            offsets.setdefault((abs(qr * stride - kr), abs(qc * stride - kc)), len(offsets))
    return sorted(offsets, key=offsets.get)


def _attention_biases(array, grid_size, variable, key):
    """The authors' `(heads, 49)` bias table laid out for the Keras block's grid.

    At crop 224 (grid 7) both tables number the 49 offsets the same way
    (EfficientFormerV2's first-seen order) and the table is copied as is. On
    smaller grids every offset the block uses also exists in the 7x7 table and
    is picked from it; larger grids need offsets the authors never learned.
    """
    torch_offsets = _bias_offsets(TORCH_GRID_SIZE)
    if array.shape != (variable.shape[0], len(torch_offsets)):
        raise ValueError(
            f"{key}: expected shape ({variable.shape[0]}, {len(torch_offsets)}), got {array.shape}"
        )
    if grid_size == TORCH_GRID_SIZE:
        return array
    torch_id = {offset: i for i, offset in enumerate(torch_offsets)}
    needed = _bias_offsets(grid_size)
    outside = [o for o in needed if o not in torch_id]
    if outside:
        raise ValueError(
            f"{key}: the authors' block was trained on a {TORCH_GRID_SIZE}x{TORCH_GRID_SIZE} "
            f"grid (crop 224); a {grid_size}x{grid_size} grid needs position offsets it has "
            f"no bias for, e.g. {outside[0]}. Convert with crop_size <= 224."
        )
    return array[:, [torch_id[o] for o in needed]]


def _place(plan, state_dict, layer_of):
    for key, layer_name, attribute, transform in plan:
        array = _to_numpy(state_dict[key])
        layer = layer_of(layer_name)
        variable = getattr(layer, attribute)
        if transform == "attention_biases":
            array = _attention_biases(array, layer.grid_size, variable, key)
        else:
            array = _transform(array, transform, key)
        _assign(variable, array, key)


def from_torch_state_dict(state_dict, input_normalization="torch", crop_size=224, **model_kwargs):
    """Builds a Keras `ADTRSModel` holding the authors' PyTorch weights.

    The model is an `ADTRSModel` on an `ADTRSBackbone(architecture="resnet50_v1_5")`
    with `layer4_pooling="top_left", score_scale=1.0, score_offset=0.0`: at crop 224
    it computes what the authors' `Net.forward` computes for `predictionQA`
    (the flipped-input branch their forward also runs only feeds the
    self-consistency loss). Other crop sizes (multiples of 32 up to 224) reuse
    the same weights; the relative-position biases are picked by offset, and
    `top_left` pooling on a layer-4 map smaller than 4x4 averages all of it.

    Args:
        state_dict: mapping of the authors' parameter names (e.g.
            `model.layer1.0.conv1.weight`, `transformer.q.local.0.weight`,
            `transformer.attention_biases`, `fc2.weight`, `fc.weight`) to
            numpy arrays or torch tensors in PyTorch layouts. A `module.`
            prefix on every key is dropped. BatchNorm `num_batches_tracked`,
            the `L2pooling*` filters, `transformer.attention_bias_idxs` and
            the backbone classifier `model.fc.*` are ignored by design.
        input_normalization: str or None. What the model does to its input:
            `"torch"` (RGB in [0, 255], normalised as torchvision's ImageNet
            models and the authors' data loaders do) or `None` (the input is
            already normalised). Defaults to `"torch"`.
        crop_size: int. Input side, a multiple of 32 from 64 to 224.
            Defaults to `224` (the authors' crop).
        **model_kwargs: further arguments of the backbone
            (`batchnorm_momentum`, `dropout_rate`) or the task (`loss_weights`
            for fine-tuning, ...). `layer4_pooling` may be overridden;
            `backbone` may not.

    Returns:
        An `ADTRSModel` with every converted tensor in place.

    Raises:
        ValueError: if keys are missing or unknown (all listed by name), or a
            tensor's shape does not fit.

    Example:
    >>> import torch  # doctest: +SKIP
    >>> ckpt = torch.load("adtrs_live.pth", map_location="cpu")  # doctest: +SKIP
    >>> model = from_torch_state_dict(ckpt)  # doctest: +SKIP
    >>> model.predict(crops_rgb_0_255)  # (N,) quality scores  # doctest: +SKIP
    """
    if "backbone" in model_kwargs and model_kwargs["backbone"] != "resnet50_v1_5":
        raise ValueError("converted ADTRS weights need backbone='resnet50_v1_5'")
    model_kwargs.pop("backbone", None)
    if isinstance(crop_size, (int, np.integer)) and crop_size > 32 * TORCH_GRID_SIZE:
        raise ValueError(
            f"crop_size {crop_size} is larger than the authors' 224: their attention block "
            "has no relative-position biases for the larger grid"
        )
    state_dict = _strip_module_prefix(state_dict)
    plan_backbone = _backbone_plan("model.")
    plan_attention = _attention_plan("transformer.")
    expected = [p[0] for p in plan_backbone + plan_attention + list(_HEAD_PLAN)]
    _check_keys(state_dict, expected, _is_ignored, "the authors' ADTRS model")

    options = {"layer4_pooling": "top_left", "score_scale": 1.0, "score_offset": 0.0}
    options.update(model_kwargs)
    backbone_options = {k: options.pop(k) for k in ("batchnorm_momentum", "dropout_rate", "precision") if k in options}
    features = ADTRSBackbone(crop_size=crop_size, architecture="resnet50_v1_5",
                             input_normalization=input_normalization, **backbone_options)
    model = ADTRSModel(features, **options)
    backbone = features.stages
    block = features.attention_block
    _place(plan_backbone, state_dict, backbone.get_layer)
    _place(plan_attention, state_dict, lambda name: block if name is None else getattr(block, name))
    _place(_HEAD_PLAN, state_dict, model.network.get_layer)
    model.backbone_weights_info = {"requested": "torch state dict", "source": "converted ADTRS weights"}
    return model


def from_torchvision_resnet50(state_dict, model):
    """Loads a torchvision ResNet50 checkpoint into an ADTRS model's backbone.

    Seeds an ADTRS model on a `resnet50_v1_5` backbone with ImageNet weights from
    torchvision (e.g. `resnet50-0676ba61.pth` / `resnet50-11ad3fa6.pth`, or
    `torchvision.models.resnet50(weights=...).state_dict()`); the attention
    block and head keep their initialisation. Use `input_normalization="torch"`
    (the default `"auto"` of this backbone).

    Args:
        state_dict: mapping of torchvision names (`conv1.weight`,
            `layer1.0.bn1.running_mean`, ...) to numpy arrays or torch
            tensors. A `module.` or `model.` prefix on every key is dropped;
            `fc.*` and `num_batches_tracked` are ignored.
        model: an `ADTRSModel` whose backbone's architecture is `resnet50_v1_5`.

    Returns:
        The model (its backbone updated in place).

    Raises:
        ValueError: on missing or unknown keys (listed by name) or
            mismatched shapes, or if the model's backbone is not
            `resnet50_v1_5`.

    Example:
    >>> model = keras_adtrs.build_adtrs(crop_size=224, backbone="resnet50_v1_5", backbone_weights=None)
    >>> from_torchvision_resnet50(torch.load("resnet50.pth"), model)  # doctest: +SKIP
    """
    if getattr(model, "architecture", None) != "resnet50_v1_5":
        raise ValueError(
            "torchvision ResNet50 weights fit backbone='resnet50_v1_5' only, "
            f"not {getattr(model, 'architecture', None)!r}"
        )
    state_dict = _strip_module_prefix(state_dict)
    keys = list(state_dict)
    if keys and all(k.startswith("model.") for k in keys):
        state_dict = {k[len("model.") :]: v for k, v in state_dict.items()}
    plan = _backbone_plan("")
    _check_keys(
        state_dict,
        [p[0] for p in plan],
        lambda k: k.endswith("num_batches_tracked") or k.startswith("fc."),
        "torchvision's ResNet50",
    )
    _place(plan, state_dict, model.backbone.stages.get_layer)
    model.backbone_weights_info = {
        "requested": "torchvision state dict",
        "source": "converted torchvision ResNet50 weights",
    }
    return model


# ------------------------------------------------------------ checkpoints
def load_state_dict(path):
    """Reads a state dict from `.npz` (numpy only) or a torch checkpoint.

    Torch checkpoints holding `{"state_dict": ...}` or `{"model": ...}` are
    unwrapped. Returns a dict of name -> numpy array.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            f"reading the PyTorch checkpoint {path} needs torch: "
            "pip install keras-adtrs[torch] (or save the state dict as an .npz of "
            "name -> array and convert that)"
        ) from exc
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(checkpoint).__name__})")
    return {name: _to_numpy(value) for name, value in checkpoint.items()}
