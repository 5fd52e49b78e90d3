"""`ADTRSBackbone`: the ADTRS feature extractor, as keras-hub splits a backbone from its task.

The backbone takes RGB crops with pixel values in [0, 255] and returns the
feature maps the ADTRS head and objective read (ADTRS_SPEC §1, steps 1-4):

- `layer4` `(B, g, g, 2048)`: the last ResNet50 stage (`g = crop / 32`);
- `tokens` `(B, g, g, 3840)`: every stage L2-normalised over channels,
  L2-pooled, dropped out (training only), average-pooled to `g x g` and
  concatenated;
- `block_output` `(B, g', g', 3840)`: the attention down-sampling block on
  the tokens (`g' = ceil(g / 2)`).

It is a functional `keras.Model`: `backbone(images)` gives the dict, a
`.keras` file of a backbone alone loads as one, and
`keras_adtrs.models.weights.load_backbone` reads a backbone from any saved
ADTRS model (the pre-training run's or a training run's), which is what
`init_from` starts from. The scoring task (`keras_adtrs.models.adtrs.ADTRSModel`:
the head and the objective) is built on one.

Example:
>>> backbone = ADTRSBackbone(crop_size=64)
>>> {k: tuple(v.shape) for k, v in backbone(np.zeros((1, 64, 64, 3))).items()}  # doctest: +SKIP
{'block_output': (1, 1, 1, 3840), 'layer4': (1, 2, 2, 2048), 'tokens': (1, 2, 2, 3840)}
"""

import keras
import numpy as np

from keras_adtrs.errors import SettingError
from keras_adtrs.models import layers as adtrs_layers
from keras_adtrs.models.resnet import BACKBONE_INPUT_NORMALIZATION, build_stages
from keras_adtrs.defaults import AUTO_PRECISION
from keras_adtrs.models.precision import (
    PRECISIONS,
    choose_precision,
    current_precision,
    precision_scope,
    validate_precision,
)

#: Average-pooling window of each stage's map, so every level is `g x g`.
POOL_WINDOWS = (8, 4, 2, 1)
MIN_CROP, MAX_CROP = 64, 512
#: The backbone's outputs.
FEATURES = ("block_output", "layer4", "tokens")
#: Name of the ResNet stages sub-model inside the backbone (and inside an ADTRS network).
STAGES_NAME_PREFIX = "resnet50"


def validate_crop_size(crop_size):
    """Returns `crop_size` as an int; raises `SettingError` unless it is a multiple of 32 in [64, 512]."""
    if (
        isinstance(crop_size, bool)
        or not isinstance(crop_size, (int, np.integer))
        or crop_size % 32
        or not MIN_CROP <= crop_size <= MAX_CROP
    ):
        raise SettingError("crop_size", f"must be a multiple of 32 from {MIN_CROP} to {MAX_CROP}, got {crop_size!r}")
    return int(crop_size)


def resolve_input_normalization(architecture, input_normalization):
    """`"auto"` -> the architecture's pretrained weights' own normalisation; `"none"` -> None."""
    if architecture not in BACKBONE_INPUT_NORMALIZATION:
        raise SettingError("backbone", f"must be one of {sorted(BACKBONE_INPUT_NORMALIZATION)}, got {architecture!r}")
    if input_normalization == "auto":
        return BACKBONE_INPUT_NORMALIZATION[architecture]
    if input_normalization in ("none", "None"):
        return None
    return input_normalization


def resolve_precision(precision):
    """`precision` (`auto` chosen from this machine), or Keras' global dtype policy when None."""
    if precision == AUTO_PRECISION:
        return choose_precision(precision)[0]
    if precision is None:
        precision = current_precision()
        if precision not in PRECISIONS:
            raise SettingError(
                "precision", f"is unset and Keras' global dtype policy {precision!r} is not one of "
                f"{', '.join(PRECISIONS)}: pass precision="
            )
    return validate_precision(precision)


@keras.saving.register_keras_serializable(package="keras_adtrs")
class ADTRSBackbone(keras.Model):
    """The ADTRS feature extractor: ResNet50 stages, L2 pooling and the attention down-sampling block.

    Args:
        crop_size: int. Square crop side, a multiple of 32 from 64 to 512.
            Defaults to `224`.
        architecture: str. `"resnet50"` (keras.applications) or
            `"resnet50_v1_5"` (the torchvision layout the authors use).
            Defaults to `"resnet50"`.
        input_normalization: str or None. `"auto"` (the architecture's
            pretrained weights' own: `"caffe"` for resnet50, `"torch"` for
            resnet50_v1_5), `"caffe"`, `"torch"`, or None when the input is
            already normalised. Defaults to `"auto"`.
        dropout_rate: float. Dropout after L2 pooling. Defaults to `0.1`.
        num_heads, key_dim, attn_ratio: int. Attention block shape.
            Defaults to `16`, `16`, `4`.
        batchnorm_momentum: float. Moving-statistics momentum of every
            BatchNorm (Keras convention). Defaults to `0.9` (torch's 0.1).
        precision: str or None. `"float32"`, `"mixed_bfloat16"` or
            `"mixed_float16"`: the layers compute in it; `"auto"` chooses
            `mixed_bfloat16` where this machine runs bfloat16 fast, else
            `float32` (the config records the choice). Defaults to None
            (Keras' global dtype policy).
        **kwargs: `keras.Model` arguments (`name`, ...).
    """

    def __init__(
        self,
        crop_size=224,
        architecture="resnet50",
        input_normalization="auto",
        dropout_rate=0.1,
        num_heads=16,
        key_dim=16,
        attn_ratio=4,
        batchnorm_momentum=0.9,
        precision=None,
        **kwargs,
    ):
        crop_size = validate_crop_size(crop_size)
        normalization = resolve_input_normalization(architecture, input_normalization)
        precision = resolve_precision(precision)
        kwargs.setdefault("name", "adtrs_backbone")
        with precision_scope(precision):
            images = keras.Input((crop_size, crop_size, 3), name="images")
            x = adtrs_layers.InputNormalization(normalization, name="input_normalization")(images)
            stages = build_stages(architecture, crop_size, batchnorm_momentum)(x)
            pooled = []
            for level, (feature, window) in enumerate(zip(stages, POOL_WINDOWS), start=1):
                # float32 from the normalisation to the down-sampled map: the L2 pooling computes in
                # float32 anyway, so under mixed precision the full-size map is cast up once and only
                # the pooled map is cast back. One layer normalises over channels and pools (as the
                # authors' F.normalize then L2pooling), from the squares alone.
                y = adtrs_layers.L2Pooling(channel_norm_epsilon=1e-12, name=f"l2_pooling_{level}", dtype="float32")(
                    feature
                )
                y = keras.layers.Dropout(float(dropout_rate), name=f"dropout_{level}", dtype="float32")(y)
                if window > 1:
                    y = keras.layers.AveragePooling2D(window, name=f"average_pooling_{level}", dtype="float32")(y)
                pooled.append(y)
            tokens = keras.layers.Concatenate(name="tokens")(pooled)
            block_output = adtrs_layers.AttentionDownsample(
                num_heads=int(num_heads),
                key_dim=int(key_dim),
                attn_ratio=int(attn_ratio),
                batchnorm_momentum=float(batchnorm_momentum),
                name="attention_downsample",
            )(tokens)
            outputs = {"block_output": block_output, "layer4": stages[-1], "tokens": tokens}
            super().__init__(inputs=images, outputs=outputs, dtype=precision, **kwargs)
        self.crop_size = crop_size
        self.architecture = architecture
        self.input_normalization = normalization
        self.dropout_rate = float(dropout_rate)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.attn_ratio = int(attn_ratio)
        self.batchnorm_momentum = float(batchnorm_momentum)
        self.precision = precision

    @property
    def stages(self):
        """The ResNet50 sub-model giving the four stage maps (where ImageNet or converted weights load)."""
        for layer in self.layers:
            if layer.name.startswith(STAGES_NAME_PREFIX):
                return layer
        raise ValueError(f"backbone {self.name!r} holds no {STAGES_NAME_PREFIX} stages")

    @property
    def attention_block(self):
        """The attention down-sampling block."""
        return self.get_layer("attention_downsample")

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "crop_size": self.crop_size,
            "architecture": self.architecture,
            "input_normalization": self.input_normalization,
            "dropout_rate": self.dropout_rate,
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "attn_ratio": self.attn_ratio,
            "batchnorm_momentum": self.batchnorm_momentum,
            "precision": self.precision,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
