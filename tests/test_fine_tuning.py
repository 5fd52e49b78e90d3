"""Fine-tuning controls: the backbone's learning-rate ratio, frozen BatchNorm, linear probing then fine-tuning."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_adtrs
from conftest import REPO, random_crops, random_score_head
from keras_adtrs.errors import SettingError
from keras_adtrs.models.fine_tuning import LinearProbeStage, PartwiseAdam, is_head_variable, partwise
from run_helpers import run_env


pytestmark = pytest.mark.large  # training runs


def _data(n=8, seed=0):
    x = random_crops(n, seed=seed)
    x[::2] *= 0.3
    y = np.where(np.arange(n) % 2 == 0, 20.0, 80.0).astype("float32")
    return x, y


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return random_score_head(keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None, score_scale=20.0,
                                                     score_offset=50.0, dropout_rate=0.0))


def _values(model, head):
    return [np.array(v.value) for v in model.trainable_variables if is_head_variable(v) == head]


def _change(before, after):
    return max(float(np.abs(a - b).max()) for a, b in zip(before, after))


def test_backbone_lr_ratio_scales_the_backbone_step_only():
    """Adam's first step moves each weight by about the learning rate: ten times less in the backbone at 0.1."""
    x, y = _data()
    steps = {}
    for ratio in (1.0, 0.1):
        model = _model()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), backbone_lr_ratio=ratio)
        if ratio != 1.0:  # a ratio of 1 keeps the optimizer as given
            assert isinstance(model.optimizer, PartwiseAdam) and model.optimizer.backbone_lr_ratio == ratio
        backbone, head = _values(model, False), _values(model, True)
        model.train_on_batch(x, y)
        steps[ratio] = (_change(backbone, _values(model, False)), _change(head, _values(model, True)))
    assert steps[0.1][0] == pytest.approx(0.1 * steps[1.0][0], rel=0.05)
    assert steps[0.1][1] == pytest.approx(steps[1.0][1], rel=1e-3)
    assert model.fine_tuning == {"backbone_lr_ratio": 0.1, "freeze_batchnorm": False, "linear_probe_epochs": 0}
    with pytest.raises(SettingError, match="backbone_lr_ratio needs an Adam optimizer"):
        partwise(keras.optimizers.SGD(1e-3), 0.5)
    with pytest.raises(SettingError, match="backbone_lr_ratio must lie in"):
        partwise(keras.optimizers.Adam(), -1)


def test_frozen_batchnorm_keeps_its_statistics():
    x, y = _data()
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), freeze_batchnorm=True)
    layers = [l for l in model.network._flatten_layers(include_self=False, recursive=True)
              if isinstance(l, keras.layers.BatchNormalization)]
    assert len(layers) > 50 and not any(l.trainable for l in layers)
    before = [np.array(l.moving_mean.value) for l in layers]
    trained_before = _values(model, False)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for layer, old in zip(layers, before):
        np.testing.assert_array_equal(np.array(layer.moving_mean.value), old)
    assert _change(trained_before, _values(model, False)) > 0  # the convolutions still train
    # Saved and loaded with its training configuration, the model keeps the controls.
    assert model.get_compile_config()["freeze_batchnorm"] is True


class _Snapshots(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.backbone, self.head = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.backbone.append(_values(self.model, False))
        self.head.append(_values(self.model, True))


def test_linear_probe_trains_the_head_alone_then_everything_and_a_resumed_run_keeps_its_stage():
    x, y = _data()
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), linear_probe_epochs=1)
    start_backbone, start_head = _values(model, False), _values(model, True)
    snapshots = _Snapshots()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[snapshots])
    assert _change(start_backbone, snapshots.backbone[0]) == 0.0  # epoch 1: the head alone
    assert _change(start_head, snapshots.head[0]) > 0
    assert _change(snapshots.backbone[0], snapshots.backbone[1]) > 0  # epoch 2: everything
    assert not model.head_only  # the stage ends with the training
    # The stage is a function of the epoch: resumed at epoch index 1 with 2 probe epochs, it still probes.
    resumed = _Snapshots()
    before = _values(model, False)
    model.fit(x, y, batch_size=4, epochs=3, initial_epoch=1, verbose=0, callbacks=[LinearProbeStage(2), resumed])
    assert _change(before, resumed.backbone[0]) == 0.0  # epoch index 1 < 2: probing
    assert _change(resumed.backbone[0], resumed.backbone[1]) > 0  # epoch index 2: fine-tuning


JAX_CONTROLS = """
import json
import keras, numpy as np
import keras_adtrs
from keras_adtrs.models.fine_tuning import is_head_variable


keras.utils.set_random_seed(0)
model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None, score_scale=20.0, score_offset=50.0,
                                dropout_rate=0.0)
kernel = model.network.get_layer("score_dense").kernel
kernel.assign(np.random.default_rng(0).normal(0.0, 0.01, kernel.shape).astype("float32"))
x = np.random.default_rng(0).uniform(0, 255, (8, 64, 64, 3)).astype("float32")
y = np.where(np.arange(8) % 2 == 0, 20.0, 80.0).astype("float32")
model.compile(optimizer=keras.optimizers.Adam(1e-3), backbone_lr_ratio=0.1, freeze_batchnorm=True,
              linear_probe_epochs=1)
values = lambda head: [np.array(v.value) for v in model.trainable_variables if is_head_variable(v) == head]
bn = model.network.get_layer("resnet50").get_layer("conv1_bn")
mean = np.array(bn.moving_mean.value)
backbone, head = values(False), values(True)
model.fit(x, y, batch_size=4, epochs=1, verbose=0)
probe = {"backbone": max(float(np.abs(a - b).max()) for a, b in zip(backbone, values(False))),
         "head": max(float(np.abs(a - b).max()) for a, b in zip(head, values(True)))}
model.fit(x, y, batch_size=4, epochs=2, initial_epoch=1, verbose=0)
tuned = max(float(np.abs(a - b).max()) for a, b in zip(backbone, values(False)))
print("RESULT " + json.dumps({"probe": probe, "tuned": tuned, "bn_moved": float(np.abs(np.array(bn.moving_mean.value) - mean).max()),
                              "bn_trainable": bn.trainable, "backend": keras.backend.backend()}))
"""


@pytest.mark.large
def test_the_controls_work_on_the_jax_backend(tmp_path):
    pytest.importorskip("jax")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(JAX_CONTROLS)], cwd=tmp_path,
                            env=run_env(KERAS_BACKEND="jax", PYTHONPATH=str(REPO)), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads([line for line in result.stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    assert out["backend"] == "jax"
    assert out["probe"]["backbone"] == 0.0 and out["probe"]["head"] > 0
    assert out["tuned"] > 0 and out["bn_moved"] == 0.0 and out["bn_trainable"] is False
