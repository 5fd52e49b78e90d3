"""Runs `python -m keras_adtrs.train` on a tiny in-memory data set (`--dataset tiny`).

Used by the tests as a subprocess:
`python tests/distribute_helpers.py [--logical-cpus N] [--block-tensorflow] TRAIN ARGS...`.
`--block-tensorflow` makes TensorFlow unimportable (as on a JAX-only machine) and prints
`NO-TENSORFLOW-IMPORTED` at the end when no TensorFlow module was loaded.
"""

import os
import sys

import numpy as np

os.environ.setdefault("KERAS_ADTRS_OFFLINE", "1")


def register_tiny_source(n=32, size=72):
    from keras_adtrs.data.registry import register_source
    from keras_adtrs.data.source import IQASource

    @register_source("tiny")
    def _tiny(data_dir=None, manual_dir=None, **kwargs):
        rng = np.random.default_rng(0)
        images = []
        for i in range(n):
            noise = rng.normal(0, 4 + 3 * (i % 8), (size, size, 3))
            images.append(np.clip(128 + noise + 20 * np.sin(np.arange(size) / (2 + i % 5))[None, :, None], 0, 255).astype(np.uint8))
        scores = np.array([100 - 10 * (i % 8) for i in range(n)], np.float32) + rng.uniform(0, 1, n).astype(np.float32)
        return IQASource("tiny", images, scores, np.arange(n) // 2, [f"im{i:03d}.png" for i in range(n)])


def set_logical_cpus(count):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


class _BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "tf_keras"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


def main(argv):
    if argv[:1] == ["--logical-cpus"]:
        set_logical_cpus(int(argv[1]))
        argv = argv[2:]
    blocked = argv[:1] == ["--block-tensorflow"]
    if blocked:
        sys.meta_path.insert(0, _BlockTensorFlow())
        argv = argv[1:]
    register_tiny_source()
    from keras_adtrs.train import main as train_main

    status = train_main(argv)
    if blocked and not any(m.split(".")[0] in ("tensorflow", "tensorflow_datasets") for m in sys.modules):
        print("NO-TENSORFLOW-IMPORTED")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
