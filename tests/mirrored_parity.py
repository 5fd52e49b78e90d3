"""MirroredStrategy over 2 logical CPUs vs one device on the same global batch.

Run as a subprocess (logical devices must be configured before TensorFlow
initialises them); prints one JSON line prefixed `RESULT `.
"""

import json
import sys

import keras
import numpy as np
import tensorflow as tf

import keras_adtrs
from keras_adtrs.training.distribute import choose_strategy

NO_RANKING = {"ranking": 0.0, "ranking_consistency": 0.0}


def build(strategy, weights=None, freeze_bn=True, loss_weights=None, optimizer="sgd"):
    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None, dropout_rate=0.0,
                                        score_scale=10.0, score_offset=50.0, loss_weights=loss_weights)
        if weights is not None:
            model.set_weights(weights)
        if freeze_bn:  # inference-mode BatchNorm: each crop's forward pass no longer depends on its batch
            for layer in model._flatten_layers():
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        opt = keras.optimizers.SGD(0.01) if optimizer == "sgd" else keras.optimizers.Adam(1e-3)
        model.compile(optimizer=opt)
    return model


def first_step(model, images, labels):
    history = model.fit(images, labels, batch_size=len(labels), epochs=1, shuffle=False, verbose=0)
    return {k: float(v[0]) for k, v in history.history.items()}


def main():
    # Two logical CPUs, before TensorFlow initialises its devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    labels = np.linspace(10, 90, 8).astype("float32")[rng.permutation(8)]
    mirrored = choose_strategy("mirrored")
    single = choose_strategy("none")
    assert mirrored.num_replicas_in_sync == 2, mirrored.num_replicas_in_sync
    weights = build(single).get_weights()
    out = {"replicas": mirrored.num_replicas_in_sync}
    # Ranking weights 0: the total no longer depends on how the batch is split,
    # so the first step's losses and the update itself must match.
    one = build(single, weights, loss_weights=NO_RANKING)
    two = build(mirrored, weights, loss_weights=NO_RANKING)
    out["single"] = first_step(one, images, labels)
    out["mirrored"] = first_step(two, images, labels)
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(one.get_weights(), two.get_weights())]
    moved = [float(np.max(np.abs(a - b))) for a, b in zip(one.get_weights(), weights)]
    out["max_weight_diff"] = max(diffs)
    out["max_weight_change"] = max(moved)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
