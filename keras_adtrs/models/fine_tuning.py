"""Fine-tuning controls (`keras.ops` and Keras callbacks: any backend).

Three controls a fine-tuning run needs when it starts from pretrained (or
pre-trained) features, set with `ADTRSModel.compile(...)` or the `train`
command's settings:

- `backbone_lr_ratio`: the learning rate of the backbone and the attention
  block relative to the head's (HyperIQA trains its head at 10x the
  backbone's rate). `PartwiseAdam` is Adam with that ratio applied per
  variable: every variable outside the head layers (`HEAD_LAYERS`) steps with
  `ratio * learning_rate`.
- `freeze_batchnorm`: every BatchNorm layer of the backbone and the block
  runs in inference mode and keeps its moving statistics (and its scale and
  offset) fixed: Keras' BatchNormalization with `trainable=False`
  (`freeze_batchnorm(model)`). Set before training starts, for the whole run.
- `linear_probe_epochs`: the first N epochs train the head alone
  (linear probing, then fine-tuning: LP-FT, Kumar et al., ICLR 2022): the
  network runs in inference mode and only the head's variables get a
  gradient (`LinearProbeStage` sets `model.head_only`, as the training steps
  read it). The stage is a function of the epoch, so a resumed run keeps the
  stage it was in.

Example:
>>> model.compile(optimizer=keras.optimizers.Adam(1e-4), backbone_lr_ratio=0.1, freeze_batchnorm=True,
...               linear_probe_epochs=2)  # doctest: +SKIP
"""

import keras
from keras import ops

from keras_adtrs.errors import SettingError

#: Layers of the ADTRS network that form the head (everything else is the backbone and the block).
HEAD_LAYERS = ("block_pooling", "head_dense", "layer4_pooling", "head_concat", "score_dense", "score")


def is_head_variable(variable):
    """Whether a variable belongs to the head: its path starts with one of `HEAD_LAYERS`."""
    return variable.path.split("/")[0] in HEAD_LAYERS


def check_ratio(ratio):
    """Returns `ratio` as a float; raises `SettingError` unless it is a finite number in [0, 1e3]."""
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise SettingError("backbone_lr_ratio", f"must be a number, got {ratio!r}") from None
    if not 0.0 <= value <= 1e3:
        raise SettingError("backbone_lr_ratio", f"must lie in [0, 1000], got {ratio!r}")
    return value


@keras.saving.register_keras_serializable(package="keras_adtrs")
class PartwiseAdam(keras.optimizers.Adam):
    """Adam whose learning rate is `backbone_lr_ratio` times smaller outside the head.

    Every variable whose layer is not one of `HEAD_LAYERS` (the backbone and
    the attention block) steps with `backbone_lr_ratio * learning_rate`; the
    head steps with `learning_rate`. With a ratio of 1 it is Adam.

    Args:
        backbone_lr_ratio: float. The backbone's learning rate over the
            head's. Defaults to `1.0`.
        **kwargs: `keras.optimizers.Adam` arguments.
    """

    def __init__(self, backbone_lr_ratio=1.0, **kwargs):
        super().__init__(**kwargs)
        self.backbone_lr_ratio = check_ratio(backbone_lr_ratio)

    def build(self, var_list):
        super().build(var_list)
        self._ratios = [1.0 if is_head_variable(v) else self.backbone_lr_ratio for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        ratio = self._ratios[self._get_variable_index(variable)]
        if ratio != 1.0:
            learning_rate = ops.multiply(ops.cast(learning_rate, variable.dtype), ratio)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "backbone_lr_ratio": self.backbone_lr_ratio}


def partwise(optimizer, backbone_lr_ratio):
    """`optimizer` with the backbone's learning rate at `backbone_lr_ratio` times the head's.

    A `PartwiseAdam` is given the ratio; a plain `keras.optimizers.Adam` is
    rebuilt as a `PartwiseAdam` with its own settings; a
    `LossScaleOptimizer` has its inner optimizer converted. A ratio of 1
    returns `optimizer` unchanged.

    Raises:
        SettingError: another optimizer with a ratio other than 1.
    """
    ratio = check_ratio(backbone_lr_ratio)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        inner = partwise(optimizer.inner_optimizer, ratio)
        if inner is optimizer.inner_optimizer:
            return optimizer
        return keras.optimizers.LossScaleOptimizer(inner)
    if isinstance(optimizer, PartwiseAdam):
        optimizer.backbone_lr_ratio = ratio
        return optimizer
    if ratio == 1.0:
        return optimizer
    if type(optimizer) is not keras.optimizers.Adam:
        raise SettingError(
            "backbone_lr_ratio", f"needs an Adam optimizer (keras_adtrs.models.fine_tuning.PartwiseAdam); "
            f"got {type(optimizer).__name__}"
        )
    return PartwiseAdam.from_config({**optimizer.get_config(), "backbone_lr_ratio": ratio})


def freeze_batchnorm(model):
    """Every BatchNormalization of the model's network runs in inference mode with fixed statistics.

    Returns:
        The number of layers frozen.
    """
    frozen = 0
    for layer in model.network._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            frozen += 1
    return frozen


def check_epochs(epochs):
    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 0:
        raise SettingError("linear_probe_epochs", f"must be a whole number >= 0, got {epochs!r}")
    return int(epochs)


class LinearProbeStage(keras.callbacks.Callback):
    """Trains the head alone for the first `epochs` epochs, then everything.

    Sets `model.head_only` at each epoch start from the epoch number (so a
    run resumed at epoch `e` is in the stage of epoch `e`) and retraces the
    train function when the stage changes.

    Args:
        epochs: int. Linear-probe epochs; `0` does nothing.
    """

    def __init__(self, epochs):
        super().__init__()
        self.epochs = check_epochs(epochs)

    def _set(self, head_only):
        if bool(self.model.head_only) != head_only:
            self.model.head_only = head_only
            self.model.make_train_function(force=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._set(epoch < self.epochs)

    def on_train_end(self, logs=None):
        self._set(False)
