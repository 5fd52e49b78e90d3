"""The ADTRS model: a functional graph inside a Keras model with the ADTRS objective.

`ADTRSModel` holds `network`, a functional model joining the backbone's four
stage outputs to the registered custom layers of `keras_adtrs.models.layers`, and
trains with the ADTRS objective (`keras_adtrs.models.objective`) built into its
`train_step`: `model.compile(optimizer=...)` is enough for `fit`.
"""

import zipfile

import keras
import numpy as np
from keras import ops

from keras_adtrs.models import layers as adtrs_layers
from keras_adtrs.models.backbones import BACKBONE_INPUT_NORMALIZATION, build_backbone
from keras_adtrs.models.objective import (
    DEFAULT_LOSS_WEIGHTS,
    LOSS_TERM_NAMES,
    adtrs_loss_terms,
    self_consistency,
    unpack_batch,
    update_trackers,
)
from keras_adtrs.models.precision import (
    PRECISIONS,
    check_precision,
    current_precision,
    precision_scope,
    validate_precision,
)
from keras_adtrs.models.weights import init_from as init_from_file
from keras_adtrs.models.weights import load_backbone_weights

LAYER4_POOLINGS = ("global", "top_left")
POOL_WINDOWS = (8, 4, 2, 1)
INTERMEDIATES = ("layer4", "tokens", "block_output", "head_features", "score")
MIN_CROP, MAX_CROP = 64, 512


def validate_crop_size(crop_size):
    """Raises ValueError unless `crop_size` is a multiple of 32 in [64, 512]."""
    if (
        isinstance(crop_size, bool)
        or not isinstance(crop_size, (int, np.integer))
        or crop_size % 32
        or not MIN_CROP <= crop_size <= MAX_CROP
    ):
        raise ValueError(
            f"crop_size must be a multiple of 32 from {MIN_CROP} to {MAX_CROP}, got {crop_size!r}"
        )
    return int(crop_size)


def build_adtrs_network(
    crop_size=224,
    backbone="resnet50",
    layer4_pooling="global",
    input_normalization="caffe",
    dropout_rate=0.1,
    num_heads=16,
    key_dim=16,
    attn_ratio=4,
    batchnorm_momentum=0.9,
    score_scale=1.0,
    score_offset=0.0,
):
    """The functional ADTRS graph: images in [0, 255] -> dict of outputs.

    Outputs: `score` (B,), `block_output` (B, g', g', 3840), `layer4`
    (B, g, g, 2048), `tokens` (B, g, g, 3840) and `head_features` (B, 2048),
    with `g = crop_size / 32` and `g' = ceil(g / 2)`. Arguments as in
    `ADTRSModel`.
    """
    crop_size = validate_crop_size(crop_size)
    if layer4_pooling not in LAYER4_POOLINGS:
        raise ValueError(f"layer4_pooling must be one of {LAYER4_POOLINGS}, got {layer4_pooling!r}")
    images = keras.Input((crop_size, crop_size, 3), name="images")
    x = adtrs_layers.InputNormalization(input_normalization, name="input_normalization")(images)
    stages = build_backbone(backbone, crop_size, batchnorm_momentum)(x)
    pooled = []
    for level, (feature, window) in enumerate(zip(stages, POOL_WINDOWS), start=1):
        y = adtrs_layers.ChannelL2Normalize(name=f"l2_normalize_{level}")(feature)
        y = adtrs_layers.L2Pooling(name=f"l2_pooling_{level}")(y)
        y = keras.layers.Dropout(dropout_rate, name=f"dropout_{level}")(y)
        if window > 1:
            y = keras.layers.AveragePooling2D(window, name=f"average_pooling_{level}")(y)
        pooled.append(y)
    tokens = keras.layers.Concatenate(name="tokens")(pooled)
    block_output = adtrs_layers.AttentionDownsample(
        num_heads=num_heads,
        key_dim=key_dim,
        attn_ratio=attn_ratio,
        batchnorm_momentum=batchnorm_momentum,
        name="attention_downsample",
    )(tokens)
    layer4 = stages[-1]
    # The score head stays float32 under mixed precision.
    pooled_block = keras.layers.GlobalAveragePooling2D(name="block_pooling", dtype="float32")(block_output)
    head_features = keras.layers.Dense(2048, name="head_dense", dtype="float32")(pooled_block)
    if layer4_pooling == "global":
        pooled_layer4 = keras.layers.GlobalAveragePooling2D(name="layer4_pooling", dtype="float32")(layer4)
    else:
        pooled_layer4 = adtrs_layers.TopLeftAveragePooling(4, name="layer4_pooling", dtype="float32")(layer4)
    joined = keras.layers.Concatenate(name="head_concat", dtype="float32")([head_features, pooled_layer4])
    # Zero-initialised: the first predictions equal score_offset (the label mean), and
    # Adam grows the head from there instead of first undoing a random projection of
    # 4096 large, positively correlated features.
    raw = keras.layers.Dense(1, kernel_initializer="zeros", name="score_dense", dtype="float32")(joined)
    score = adtrs_layers.ScoreAffine(score_scale, score_offset, name="score", dtype="float32")(raw)
    outputs = {
        "score": score,
        "block_output": block_output,
        "layer4": layer4,
        "tokens": tokens,
        "head_features": head_features,
    }
    return keras.Model(images, outputs, name="adtrs_network")


@keras.saving.register_keras_serializable(package="keras_adtrs")
class ADTRSModel(keras.Model):
    """ADTRS blind image quality model with its training objective built in.

    Called on a batch of RGB crops with pixel values in [0, 255], shape
    `(B, crop_size, crop_size, 3)`, it returns one score per crop, shape
    `(B,)`, in the training labels' units. `fit` trains it with the ADTRS
    objective (quality L1 on crops and flipped crops, self-consistency,
    relative ranking and ranking consistency), reporting each term.

    Args:
        crop_size: int. Square crop side, a multiple of 32 from 64 to 512.
            Defaults to `224`.
        backbone: str. `"resnet50"` (keras.applications) or `"resnet50_v1_5"`
            (torchvision layout). Defaults to `"resnet50"`.
        layer4_pooling: str. `"global"` (mean of the whole layer-4 map) or
            `"top_left"` (the authors' `AvgPool2d(4)` quirk: mean of the
            top-left 4x4 window). Defaults to `"global"`.
        input_normalization: str or None. `"auto"` (the backbone weights' own:
            `"caffe"` for resnet50, `"torch"` for resnet50_v1_5), `"caffe"`,
            `"torch"`, or `None` when the input is already normalised.
            Defaults to `"auto"`.
        dropout_rate: float. Dropout after L2 pooling. Defaults to `0.1`.
        num_heads, key_dim, attn_ratio: int. Attention block shape.
            Defaults to `16`, `16`, `4`.
        batchnorm_momentum: float. Moving-statistics momentum of every
            BatchNorm (Keras convention). Defaults to `0.9` (torch's 0.1),
            which settles in tens of steps rather than hundreds.
        score_scale, score_offset: float. The head predicts standardised
            scores; `score = raw * score_scale + score_offset`. Set them to the
            training labels' spread and mean. Defaults to `1.0`, `0.0`.
        loss_weights: dict or None. Weights of `quality`, `consistency`,
            `ranking`, `ranking_consistency` (defaults: 1, 1, 0.05, 1).
        consistency_flip_back: bool. Compare the flipped pass's maps flipped
            back (True) or position by position as the authors' code does
            (False). Defaults to `False`.
        l2_weight_decay: float. Coupled L2 weight decay added to every
            gradient (the authors' `Adam(weight_decay=...)`, not AdamW).
            Defaults to `0.0`.
        precision: str or None. `"float32"`, `"mixed_bfloat16"` or
            `"mixed_float16"` (`keras_adtrs.models.precision`): the network's
            layers compute in it, the score head and the loss terms stay
            float32. Saved in the config, so a model loads in the precision
            it was built in. Defaults to `None`: Keras' global dtype policy.

    Example:
    >>> model = ADTRSModel(crop_size=64)
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-4))
    >>> model.fit(crops, scores, batch_size=8)  # doctest: +SKIP
    >>> model.predict(crops).shape  # doctest: +SKIP
    (N,)
    """

    def __init__(
        self,
        crop_size=224,
        backbone="resnet50",
        layer4_pooling="global",
        input_normalization="auto",
        dropout_rate=0.1,
        num_heads=16,
        key_dim=16,
        attn_ratio=4,
        batchnorm_momentum=0.9,
        score_scale=1.0,
        score_offset=0.0,
        loss_weights=None,
        consistency_flip_back=False,
        l2_weight_decay=0.0,
        precision=None,
        **kwargs,
    ):
        if precision is None:
            precision = current_precision()
            if precision not in PRECISIONS:
                raise ValueError(
                    f"Keras' global dtype policy {precision!r} is not one of {', '.join(PRECISIONS)}: pass precision="
                )
        validate_precision(precision)
        # The model's own policy too: its __call__ casts the input pixels to it.
        kwargs.setdefault("dtype", precision)
        super().__init__(**kwargs)
        if input_normalization == "auto":
            if backbone not in BACKBONE_INPUT_NORMALIZATION:
                raise ValueError(
                    f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONE_INPUT_NORMALIZATION)}"
                )
            input_normalization = BACKBONE_INPUT_NORMALIZATION[backbone]
        if input_normalization in ("none", "None"):
            input_normalization = None
        weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        if set(weights) != set(DEFAULT_LOSS_WEIGHTS):
            raise ValueError(
                f"unknown loss weight(s) {sorted(set(weights) - set(DEFAULT_LOSS_WEIGHTS))}; "
                f"known: {sorted(DEFAULT_LOSS_WEIGHTS)}"
            )
        self.crop_size = validate_crop_size(crop_size)
        self.backbone = backbone
        self.layer4_pooling = layer4_pooling
        self.input_normalization = input_normalization
        self.dropout_rate = float(dropout_rate)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.attn_ratio = int(attn_ratio)
        self.batchnorm_momentum = float(batchnorm_momentum)
        self.score_scale = float(score_scale)
        self.score_offset = float(score_offset)
        self.loss_weights = {k: float(v) for k, v in weights.items()}
        self.consistency_flip_back = bool(consistency_flip_back)
        self.l2_weight_decay = float(l2_weight_decay)
        self.precision = precision
        # The network's layers take the precision from Keras' global policy while they are built.
        with precision_scope(precision):
            self.network = build_adtrs_network(
                crop_size=self.crop_size,
                backbone=backbone,
                layer4_pooling=layer4_pooling,
                input_normalization=input_normalization,
                dropout_rate=self.dropout_rate,
                num_heads=self.num_heads,
                key_dim=self.key_dim,
                attn_ratio=self.attn_ratio,
                batchnorm_momentum=self.batchnorm_momentum,
                score_scale=self.score_scale,
                score_offset=self.score_offset,
            )
        self.loss_trackers = {
            name: keras.metrics.Mean(name=name) for name in ("loss",) + LOSS_TERM_NAMES
        }
        self.built = True
        #: Temporary weights over `loss_weights` (not saved): the ranking
        #: warm-up of `keras_adtrs.training.callbacks.ObjectiveWarmup` sets them.
        self.loss_weight_overrides = {}
        # Not saved: set by the training run. True compiles only the forward and
        # backward passes with XLA (keras_adtrs.models.step_tensorflow._xla_gradients).
        self.xla_gradients = False
        #: Where the backbone's weights came from (set by `build_adtrs`).
        self.backbone_weights_info = {"requested": None, "source": "random initialisation"}

    # ----------------------------------------------------------------- forward
    def call(self, images, training=None):
        return self.network(images, training=training)["score"]

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def get_intermediates(self, images, batch_size=32):
        """Intermediate tensors of an inference pass, as numpy, channels-last.

        Args:
            images: array `(B, crop, crop, 3)` of pixel values as the model
                takes them.
            batch_size: int. Crops per forward call. Defaults to `32`.

        Returns:
            dict with `layer4` (B, g, g, 2048), `tokens` (B, g, g, 3840),
            `block_output` (B, g', g', 3840), `head_features` (B, 2048) and
            `score` (B,).
        """
        images = np.asarray(images, "float32")
        parts = {name: [] for name in INTERMEDIATES}
        for start in range(0, len(images), batch_size):
            out = self.network(images[start : start + batch_size], training=False)
            for name in INTERMEDIATES:
                parts[name].append(ops.convert_to_numpy(out[name]))
        return {name: np.concatenate(values) for name, values in parts.items()}

    # --------------------------------------------------------------- objective
    def compute_objective(self, images, labels, training=True):
        """Every ADTRS loss term for a batch: two passes, crops and their mirror.

        Returns the dict of `keras_adtrs.models.objective.adtrs_loss_terms`.
        """
        out = self.network(images, training=training)
        out_flipped = self.network(ops.flip(images, axis=2), training=training)
        return self.objective_from_outputs(out, out_flipped, labels)

    def objective_from_outputs(self, out, out_flipped, labels):
        """The loss terms from the two passes' `network` output dicts.

        Shared by `compute_objective` and the stateless JAX step
        (`keras_adtrs.models.step_jax`), which runs the passes itself.
        """
        consistency, consistency_flipped = self_consistency(
            out["block_output"],
            out_flipped["block_output"],
            out["layer4"],
            out_flipped["layer4"],
            flip_back=self.consistency_flip_back,
        )
        return adtrs_loss_terms(
            labels,
            out["score"],
            out_flipped["score"],
            consistency,
            consistency_flipped,
            {**self.loss_weights, **self.loss_weight_overrides},
        )

    @property
    def metrics(self):
        return list(self.loss_trackers.values())

    #: On TensorFlow, the training step switches the network's BatchNormalization
    #: layers to TensorFlow's fused kernel (`keras_adtrs.models.fused_batchnorm_tensorflow`: same
    #: results, faster training; layers, variables and the `.keras` format
    #: unchanged). Set to False before training to keep Keras' own call.
    fused_batchnorm = True

    #: Number of BatchNorm layers folded into their convolutions: non-zero only
    #: on an inference copy made by `keras_adtrs.fold_batchnorm`, which cannot train.
    batchnorm_folded = 0

    def train_step(self, *args):
        if self.batchnorm_folded:
            raise RuntimeError(
                "this model is an inference copy with BatchNorm folded into the convolutions "
                "(keras_adtrs.fold_batchnorm); train the original model and fold it again"
            )
        backend = keras.backend.backend()
        # Each step module imports its backend (TensorFlow, JAX): only the one in use is imported.
        if backend == "tensorflow":
            from keras_adtrs.models.step_tensorflow import train_step

            return train_step(self, *args)
        if backend == "jax":
            from keras_adtrs.models.step_jax import train_step

            return train_step(self, *args)
        raise NotImplementedError(
            f"ADTRS training supports the tensorflow and jax backends, not {backend!r}"
        )

    def test_step(self, *args):
        backend = keras.backend.backend()
        if backend == "jax":
            from keras_adtrs.models.step_jax import test_step

            return test_step(self, *args)
        (data,) = args
        images, labels = unpack_batch(data)
        terms = self.compute_objective(images, labels, training=False)
        return update_trackers(self.loss_trackers, terms, ops.shape(labels)[0])

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """`keras.Model.predict`: one score per crop, `(N,)`.

        On TensorFlow, array input (numpy, tensors) reaches the model through a
        `tf.data` pipeline without autotuning
        (`keras_adtrs.models.predict_tensorflow.array_dataset`): Keras' own
        pipeline sometimes blocks for up to the rest of tf.data's autotuning
        period when a call ends, which made short calls slow at random
        (docs/benchmarks.md). Same batches, same results; other input
        (datasets, generators) and other backends go to Keras as they are.
        """
        if keras.backend.backend() == "tensorflow":
            from keras_adtrs.models.predict_tensorflow import array_dataset

            dataset = array_dataset(x, batch_size)
            if dataset is not None:
                return super().predict(dataset, verbose=verbose, steps=steps, callbacks=callbacks)
        return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    def predict_step(self, *args):
        if keras.backend.backend() == "jax":
            # JAX's trainer is stateless: predict_step(state, data) -> (scores, state).
            return super().predict_step(*args)
        (data,) = args
        images = data[0] if isinstance(data, (tuple, list)) else data
        return self(images, training=False)

    # ----------------------------------------------------------- serialisation
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "crop_size": self.crop_size,
            "backbone": self.backbone,
            "layer4_pooling": self.layer4_pooling,
            "input_normalization": self.input_normalization,
            "dropout_rate": self.dropout_rate,
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "attn_ratio": self.attn_ratio,
            "batchnorm_momentum": self.batchnorm_momentum,
            "score_scale": self.score_scale,
            "score_offset": self.score_offset,
            "loss_weights": dict(self.loss_weights),
            "consistency_flip_back": self.consistency_flip_back,
            "l2_weight_decay": self.l2_weight_decay,
            "precision": self.precision,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_adtrs(
    crop_size=224,
    backbone_weights="imagenet",
    layer4_pooling="global",
    backbone="resnet50",
    input_normalization="auto",
    init_from=None,
    precision=None,
    **kwargs,
):
    """Builds an ADTRS model and loads its backbone weights.

    Args:
        crop_size: int. Square crop side, a multiple of 32 from 64 to 512.
            Defaults to `224`.
        backbone_weights: `"imagenet"` (downloaded by Keras; when that fails a
            warning is printed and the backbone keeps random weights), a path
            to a local weights file, or `None`/`"none"`. Defaults to
            `"imagenet"`. What happened is in `model.backbone_weights_info`.
        layer4_pooling: str. `"global"` or `"top_left"` (the authors' quirk).
            Defaults to `"global"`.
        backbone: str. `"resnet50"` or `"resnet50_v1_5"`. Defaults to
            `"resnet50"`.
        input_normalization: str or None. Defaults to `"auto"` (the backbone
            weights' own).
        init_from: str or None. A `.keras` file of an earlier ADTRS model
            (for instance `python -m keras_adtrs.pretrain`'s `model.keras`):
            its backbone and attention-block weights are copied in, the head
            starts afresh (`keras_adtrs.models.weights.init_from`). Then
            `backbone_weights` must be `"imagenet"` (the default, not
            downloaded) or None. Defaults to `None`.
        precision: str or None. `"float32"`, `"mixed_bfloat16"` (CPUs with
            AVX512-BF16 or AMX, TPUs, recent GPUs) or `"mixed_float16"`
            (GPUs); checked against this machine
            (`keras_adtrs.models.precision.check_precision`: a precision the
            device lacks raises `UnsupportedPrecisionError`). The score head
            and the loss stay float32. Defaults to `None`: Keras' global dtype
            policy (float32 unless set).
        **kwargs: further `ADTRSModel` arguments.

    Returns:
        An `ADTRSModel` taking RGB crops in [0, 255] and returning one score
        per crop.

    Example:
    >>> model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None)
    >>> model(np.zeros((2, 64, 64, 3))).shape
    (2,)
    """
    if precision is not None:
        check_precision(precision)
    model = ADTRSModel(
        crop_size=crop_size,
        backbone=backbone,
        layer4_pooling=layer4_pooling,
        input_normalization=input_normalization,
        precision=precision,
        **kwargs,
    )
    if init_from is None:
        model.backbone_weights_info = load_backbone_weights(model, backbone_weights)
        return model
    if backbone_weights not in (None, "none", "imagenet"):
        raise ValueError(
            f"pass either backbone_weights ({backbone_weights!r}) or init_from ({init_from!r}), not both"
        )
    info = init_from_file(model, init_from)
    model.backbone_weights_info = {"requested": f"init_from {info['path']}", "source": f"init_from {info['path']}",
                                   "init_from": info}
    return model


def with_precision(model, precision):
    """`model` computing in `precision`: a copy with the same weights, or `model` itself when it already does.

    Every precision keeps its variables in float32, so the weights carry over
    unchanged; only the layers' compute type changes (for instance a float32
    model served in bfloat16). Not checked against this machine (an export
    may target another one).

    Args:
        model: an `ADTRSModel` (not a folded inference copy: convert first,
            then fold).
        precision: str. One of `keras_adtrs.models.precision.PRECISIONS`.

    Returns:
        An `ADTRSModel`.

    Example:
    >>> serving = with_precision(model, "mixed_bfloat16")  # doctest: +SKIP
    """
    validate_precision(precision)
    if model.precision == precision:
        return model
    if model.batchnorm_folded:
        raise ValueError("this model is a folded inference copy: change the precision of the original, then fold")
    copy = ADTRSModel.from_config({**model.get_config(), "precision": precision})
    copy.set_weights(model.get_weights())
    copy.backbone_weights_info = dict(model.backbone_weights_info)
    return copy


#: What `load_model` raises for a file that is not a loadable model (not a
#: zip, no config.json, an unknown class, unreadable): the commands report them.
LOAD_ERRORS = (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile)


def load_model(path, compile=False, **kwargs):
    """Loads a `.keras` file saved from an `ADTRSModel` (or any model holding our layers).

    Importing `keras_adtrs.models` registers every custom class, which is what
    `keras.saving.load_model` needs; this function does both. Files saved
    before the package moved into subpackages (module paths
    `keras_adtrs.model`, `keras_adtrs.layers`) load too: classes are found by
    their registered names (`"keras_adtrs>ADTRSModel"`, ...), which never
    changed.

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
