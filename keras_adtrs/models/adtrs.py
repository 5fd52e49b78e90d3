"""`ADTRSModel`: the ADTRS scoring task, a head and the objective on an `ADTRSBackbone`.

As keras-hub splits a task from its backbone: `ADTRSModel(backbone=...)`
adds the head (ADTRS_SPEC §1, step 5) to the backbone's feature maps and
trains with the ADTRS objective (`keras_adtrs.models.objective`) built into
its `train_step`, so `model.compile(optimizer=...)` is enough for `fit`.
`keras_adtrs.build_adtrs(...)` builds one from flat settings and loads the
backbone's weights.

The head and the backbone form one functional graph, `model.network`
(images -> `score`, `block_output`, `layer4`, `tokens`, `head_features`),
which owns every layer: a `.keras` file keeps the weights layout of files
saved before the split, so those load unchanged, and `from_config` reads
their flat configs.
"""

import keras
import numpy as np
from keras import ops

from keras_adtrs.errors import SettingError
from keras_adtrs.models import layers as adtrs_layers
from keras_adtrs.models.backbone import ADTRSBackbone
from keras_adtrs.models import fine_tuning
from keras_adtrs.models.graph_folding import fold_in_graph
from keras_adtrs.models.objective import (
    DEFAULT_LOSS_WEIGHTS,
    LOSS_TERM_NAMES,
    adtrs_loss_terms,
    self_consistency,
    unpack_batch,
    update_trackers,
)
from keras_adtrs.models.precision import precision_scope

LAYER4_POOLINGS = ("global", "top_left")
INTERMEDIATES = ("layer4", "tokens", "block_output", "head_features", "score")
#: Settings of configs saved before the backbone/task split that now belong to the backbone
#: (`backbone` there was the architecture's name).
_BACKBONE_SETTINGS = ("crop_size", "input_normalization", "dropout_rate", "num_heads", "key_dim", "attn_ratio",
                      "batchnorm_momentum", "precision")


def build_score_network(backbone, layer4_pooling="global", score_scale=1.0, score_offset=0.0):
    """The functional ADTRS graph: the backbone's layers and the head, as one model.

    Args:
        backbone: an `ADTRSBackbone`; its layers become the network's own.
        layer4_pooling: str. `"global"` or `"top_left"` (see `ADTRSModel`).
        score_scale, score_offset: float. `score = raw * scale + offset`.

    Returns:
        A functional `keras.Model` named `adtrs_network`: images in [0, 255]
        -> dict of `score` `(B,)`, `block_output`, `layer4`, `tokens` and
        `head_features` `(B, 2048)`.
    """
    if layer4_pooling not in LAYER4_POOLINGS:
        raise SettingError("layer4_pooling", f"must be one of {LAYER4_POOLINGS}, got {layer4_pooling!r}")
    features = backbone.output
    block_output, layer4 = features["block_output"], features["layer4"]
    with precision_scope(backbone.precision):
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
        score = adtrs_layers.ScoreAffine(float(score_scale), float(score_offset), name="score", dtype="float32")(raw)
        outputs = {
            "score": score,
            "block_output": block_output,
            "layer4": layer4,
            "tokens": features["tokens"],
            "head_features": head_features,
        }
        return keras.Model(backbone.input, outputs, name="adtrs_network")

@keras.saving.register_keras_serializable(package="keras_adtrs")
class ADTRSModel(keras.Model):
    """The ADTRS blind image quality model: an `ADTRSBackbone`, the head and the training objective.

    Called on a batch of RGB crops with pixel values in [0, 255], shape
    `(B, crop_size, crop_size, 3)`, it returns one score per crop, shape
    `(B,)`, in the training labels' units. `fit` trains it with the ADTRS
    objective (quality L1 on crops and flipped crops, self-consistency,
    relative ranking and ranking consistency), reporting each term.

    Args:
        backbone: an `ADTRSBackbone` (its crop size, architecture and
            precision are the model's). Defaults to `ADTRSBackbone()` (crop
            224, resnet50, random weights).
        layer4_pooling: str. `"global"` (mean of the whole layer-4 map) or
            `"top_left"` (the authors' `AvgPool2d(4)` quirk: mean of the
            top-left 4x4 window). Defaults to `"global"`.
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

    The backbone's settings read through: `crop_size`, `precision`,
    `input_normalization`, `dropout_rate`, `num_heads`, `key_dim`,
    `attn_ratio`, `batchnorm_momentum`.

    Example:
    >>> model = ADTRSModel(ADTRSBackbone(crop_size=64), score_scale=10.0, score_offset=50.0)
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-4))
    >>> model.fit(crops, scores, batch_size=8)  # doctest: +SKIP
    >>> model.predict(crops).shape  # doctest: +SKIP
    (N,)
    """

    def __init__(
        self,
        backbone=None,
        layer4_pooling="global",
        score_scale=1.0,
        score_offset=0.0,
        loss_weights=None,
        consistency_flip_back=False,
        l2_weight_decay=0.0,
        **kwargs,
    ):
        if backbone is None:
            backbone = ADTRSBackbone()
        if not isinstance(backbone, ADTRSBackbone):
            raise SettingError("backbone", f"must be an ADTRSBackbone, got {type(backbone).__name__}")
        weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        if set(weights) != set(DEFAULT_LOSS_WEIGHTS):
            raise SettingError(
                "loss_weights", f"has unknown loss weight(s) {sorted(set(weights) - set(DEFAULT_LOSS_WEIGHTS))}; "
                f"known: {sorted(DEFAULT_LOSS_WEIGHTS)}"
            )
        # The model's own policy too: its __call__ casts the input pixels to it.
        kwargs.setdefault("dtype", backbone.precision)
        super().__init__(**kwargs)
        # Not tracked as a sub-layer: the network owns every layer (see the module docstring).
        object.__setattr__(self, "_adtrs_backbone", backbone)
        self.layer4_pooling = layer4_pooling
        self.score_scale = float(score_scale)
        self.score_offset = float(score_offset)
        self.loss_weights = {k: float(v) for k, v in weights.items()}
        self.consistency_flip_back = bool(consistency_flip_back)
        self.l2_weight_decay = float(l2_weight_decay)
        self.network = build_score_network(backbone, layer4_pooling, self.score_scale, self.score_offset)
        #: BatchNorm layers folded into their convolutions at every inference call
        #: (`keras_adtrs.models.graph_folding`; 53 for the `resnet50` backbone).
        self.batchnorm_folded_in_graph = fold_in_graph(self.network)
        self.loss_trackers = {name: keras.metrics.Mean(name=name) for name in ("loss",) + LOSS_TERM_NAMES}
        self.built = True
        #: Temporary weights over `loss_weights` (not saved): the ranking
        #: warm-up of `keras_adtrs.training.callbacks.ObjectiveWarmup` sets them.
        self.loss_weight_overrides = {}
        #: True trains the head alone, the network in inference mode (not saved; set by
        #: `keras_adtrs.models.fine_tuning.LinearProbeStage`).
        self.head_only = False
        #: Fine-tuning controls given to `compile` (not saved).
        self.fine_tuning = {"backbone_lr_ratio": 1.0, "freeze_batchnorm": False, "linear_probe_epochs": 0}
        # Not saved: set by the training run. True compiles only the forward and
        # backward passes with XLA (keras_adtrs.models.step_tensorflow._xla_gradients).
        self.xla_gradients = False
        #: Where the backbone's weights came from (set by `build_adtrs`).
        self.backbone_weights_info = {"requested": None, "source": "random initialisation"}

    def __dir__(self):
        # Keras' saving walks dir(): the backbone is reached through `network`, which owns
        # its layers, so the weights keep the layout of files saved before the split.
        return [name for name in super().__dir__() if name not in ("backbone", "_adtrs_backbone")]

    # --------------------------------------------------------------- backbone
    @property
    def backbone(self):
        """The `ADTRSBackbone` (its layers are the network's)."""
        return self._adtrs_backbone

    @property
    def crop_size(self):
        return self.backbone.crop_size

    @property
    def precision(self):
        return self.backbone.precision

    @property
    def architecture(self):
        return self.backbone.architecture

    @property
    def input_normalization(self):
        return self.backbone.input_normalization

    @property
    def dropout_rate(self):
        return self.backbone.dropout_rate

    @property
    def num_heads(self):
        return self.backbone.num_heads

    @property
    def key_dim(self):
        return self.backbone.key_dim

    @property
    def attn_ratio(self):
        return self.backbone.attn_ratio

    @property
    def batchnorm_momentum(self):
        return self.backbone.batchnorm_momentum

    def head_variables(self):
        """The head's trainable variables (what a linear probe trains)."""
        return [v for v in self.trainable_variables if fine_tuning.is_head_variable(v)]

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

        In the linear-probe stage (`head_only`) the network runs in
        inference mode. Returns the dict of
        `keras_adtrs.models.objective.adtrs_loss_terms`.
        """
        training = bool(training) and not self.head_only
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

    # ---------------------------------------------------------------- training
    def compile(self, optimizer="adam", backbone_lr_ratio=1.0, freeze_batchnorm=False, linear_probe_epochs=0,
                **kwargs):
        """`keras.Model.compile` with the fine-tuning controls (`keras_adtrs.models.fine_tuning`).

        Args:
            optimizer: a Keras optimizer (the objective is built in: no loss).
            backbone_lr_ratio: float. Learning rate of the backbone and the
                attention block relative to the head's (Adam only).
                Defaults to `1.0`.
            freeze_batchnorm: bool. Every BatchNorm runs in inference mode,
                its statistics fixed, for the whole training. Defaults to
                `False`.
            linear_probe_epochs: int. `fit` trains the head alone for this
                many epochs, then everything. Defaults to `0`.
            **kwargs: further `keras.Model.compile` arguments.
        """
        epochs = fine_tuning.check_epochs(linear_probe_epochs)
        optimizer = fine_tuning.partwise(keras.optimizers.get(optimizer), backbone_lr_ratio)
        if freeze_batchnorm:
            fine_tuning.freeze_batchnorm(self)
        self.fine_tuning = {"backbone_lr_ratio": float(backbone_lr_ratio), "freeze_batchnorm": bool(freeze_batchnorm),
                            "linear_probe_epochs": epochs}
        super().compile(optimizer=optimizer, **kwargs)
        # Built now with every trainable variable: the linear-probe stage applies it to the head's alone.
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def get_compile_config(self):
        config = super().get_compile_config()
        return None if config is None else {**config, **self.fine_tuning}

    def compile_from_config(self, config):
        # Keras skips a custom compile() when it loads a model; this one restores the controls too.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`; with `linear_probe_epochs` it adds the `LinearProbeStage` callback."""
        callbacks = list(callbacks or [])
        epochs = self.fine_tuning["linear_probe_epochs"]
        if epochs and not any(isinstance(c, fine_tuning.LinearProbeStage) for c in callbacks):
            callbacks.insert(0, fine_tuning.LinearProbeStage(epochs))
        return super().fit(*args, callbacks=callbacks, **kwargs)

    #: On TensorFlow, the training step switches the network's BatchNormalization
    #: layers to TensorFlow's fused kernel (`keras_adtrs.models.fused_batchnorm_tensorflow`: same
    #: results, faster training; layers, variables and the `.keras` format
    #: unchanged). Set to False before training to keep Keras' own call.
    fused_batchnorm = True

    #: On TensorFlow, the training step computes the gradients of the 1x1 convolutions as matrix
    #: products (`keras_adtrs.models.pointwise_conv_tensorflow`: same gradients up to rounding,
    #: faster, most of all in bfloat16). Set to False to keep TensorFlow's own gradient.
    matmul_pointwise_gradients = True

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
        raise NotImplementedError(f"ADTRS training supports the tensorflow and jax backends, not {backend!r}")

    def test_step(self, *args):
        backend = keras.backend.backend()
        if backend == "jax":
            from keras_adtrs.models.step_jax import test_step

            return test_step(self, *args)
        (data,) = args
        images, labels = unpack_batch(data)
        terms = self.compute_objective(images, labels, training=False)
        return update_trackers(self.loss_trackers, terms, ops.shape(labels)[0])

    # --------------------------------------------------------------- inference
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
        if self._constant_weights_forward is not None:
            return self._constant_weights_forward(ops.cast(images, "float32"))
        return self(images, training=False)

    #: Set by `use_constant_weights` (not saved).
    _constant_weights_forward = None

    def use_constant_weights(self):
        """Makes an inference copy predict with its weights as graph constants (TensorFlow).

        Applies to a copy made by `keras_adtrs.fold_batchnorm`, on the
        TensorFlow backend, outside a distribution strategy: `predict`,
        `predict_on_batch` and `keras_adtrs.score` then run a concrete
        function holding the current weights as constants
        (`keras_adtrs.models.constant_weights_tensorflow`). That costs
        seconds once and makes each call faster; `keras_adtrs.score` does it
        for jobs of at least `keras_adtrs.defaults.CONSTANT_WEIGHTS_MIN_CROPS`
        crops. Scores are the same up to float rounding.

        Returns:
            bool. Whether the copy now predicts with constant weights.
        """
        if keras.backend.backend() != "tensorflow":
            return False
        if self._constant_weights_forward is None:
            from keras_adtrs.models.constant_weights_tensorflow import (
                can_use_constant_weights,
                constant_weights_forward,
            )

            if not can_use_constant_weights(self):
                return False
            object.__setattr__(self, "_constant_weights_forward", constant_weights_forward(self))
            self.predict_function = None  # traced again, around the constant-weight forward pass
        return True

    def reset_constant_weights(self):
        """Drops the constant-weight forward pass of `use_constant_weights` (the variables are read again).

        `set_weights` and `load_weights` call it; call it after assigning the
        variables of an inference copy in any other way.
        """
        if self._constant_weights_forward is not None:
            object.__setattr__(self, "_constant_weights_forward", None)
            self.predict_function = None

    def set_weights(self, weights):
        super().set_weights(weights)
        self.reset_constant_weights()

    def load_weights(self, *args, **kwargs):
        super().load_weights(*args, **kwargs)
        self.reset_constant_weights()

    # ----------------------------------------------------------- serialisation
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "layer4_pooling": self.layer4_pooling,
            "score_scale": self.score_scale,
            "score_offset": self.score_offset,
            "loss_weights": dict(self.loss_weights),
            "consistency_flip_back": self.consistency_flip_back,
            "l2_weight_decay": self.l2_weight_decay,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = config.pop("backbone", None)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        else:  # saved before the backbone/task split: a flat config whose `backbone` names the architecture
            settings = {name: config.pop(name) for name in _BACKBONE_SETTINGS if name in config}
            backbone = ADTRSBackbone(architecture=backbone or "resnet50", **settings)
        return cls(backbone=backbone, **config)
