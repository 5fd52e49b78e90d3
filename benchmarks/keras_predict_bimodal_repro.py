"""Minimal reproduction: a short `model.predict` call on TensorFlow sometimes stalls when it ends.

Upstream-ready (TensorFlow and Keras only; nothing of keras_adtrs). What it shows:

1. tf.data alone: destroying an exhausted iterator of
   `Dataset.from_tensor_slices(x).batch(8)` sometimes blocks, while the
   consumer did CPU-heavy work between batches. The destructor
   (`RootDataset::Iterator::~Iterator`) waits for the autotuning thread
   (`Model::OptimizeLoop`), which is not woken by the cancellation and sleeps
   until its next optimisation tick; the ticks follow periods that double
   from 10 ms (10, 30, 70, ..., 1270, 2550, 5110 ms after the first
   `GetNext`, then every 60 s at most). With `options.autotune.enabled =
   False` the iterator has no such thread and `del` returns at once.
2. Keras: `Model.predict` on numpy input builds such a pipeline per call
   (`ArrayDataAdapter`, autotuning on), so a call of a few batches costs its
   compute plus, in some calls, the rest of the current tick period. The same
   batches fed through a dataset with autotuning off never stall.

On a quiet 2-core machine (TensorFlow 2.21, Keras 3.15) this made a 4-batch
`predict` of a ResNet50-sized model bimodal: 0.86 s or 1.29 s per call (the
next tick, 1.27 s after the first batch). With `--work-ms 0` (sleeping instead
of computing) the stall does not occur here, so the CPU load of the consumer
matters.

    python benchmarks/keras_predict_bimodal_repro.py [--trials 10] [--work-ms 200] [--part both|tfdata|keras]

Prints, per variant, the wall time of each `del iterator` (part 1) or of each
`predict` call and its CPU time (part 2): a stall shows as wall time without
CPU time.
"""

import argparse
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

SIZE = 1024


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def calibrated_work(work_ms):
    """A `tf.function` of matmuls taking about `work_ms` ms, or a sleep when 0."""
    if work_ms <= 0:
        return lambda batch: time.sleep(0.2)
    a = tf.random.normal((SIZE, SIZE)) * (1.0 / SIZE)

    @tf.function
    def matmuls(batch, n):
        y = a
        for _ in tf.range(n):
            y = tf.linalg.matmul(y, a)
        return tf.reduce_sum(y) + tf.reduce_sum(batch)

    probe = tf.zeros((8, 64, 64, 3))
    matmuls(probe, tf.constant(4)).numpy()
    start = time.perf_counter()
    matmuls(probe, tf.constant(16)).numpy()
    per_matmul_ms = (time.perf_counter() - start) * 1000 / 16
    n = tf.constant(max(1, round(work_ms / per_matmul_ms)))
    return lambda batch: matmuls(batch, n).numpy()


def part_tfdata(trials, work):
    x = np.zeros((32, 64, 64, 3), "float32")
    print("1. tf.data: wall time of `del iterator` after 4 batches of CPU work (s)")
    for autotune in (True, False):
        stalls, lives = [], []
        for _ in range(trials):
            dataset = tf.data.Dataset.from_tensor_slices(x).batch(8)
            if not autotune:
                options = tf.data.Options()
                options.autotune.enabled = False
                dataset = dataset.with_options(options)
            start = time.perf_counter()
            iterator = iter(dataset)
            for batch in iterator:
                work(batch)
            ended = time.perf_counter()
            del iterator
            stalls.append(time.perf_counter() - ended)
            lives.append(ended - start)
        print(f"   autotune {'on ' if autotune else 'off'} (iterator lived {np.median(lives):.2f} s): "
              + " ".join(f"{s:.2f}" for s in stalls))


def conv_model(crop=224):
    import keras

    inputs = keras.Input((crop, crop, 3))
    y = inputs
    for filters, stride in ((64, 2), (128, 2), (256, 2), (256, 1), (512, 2), (512, 1)):
        y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", activation="relu")(y)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(y))
    return keras.Model(inputs, outputs)


def part_keras(trials, batch=8, batches=4):
    import keras

    model = conv_model()
    x = np.random.default_rng(0).uniform(0, 255, (batch * batches, 224, 224, 3)).astype("float32")

    def no_autotune():
        options = tf.data.Options()
        options.autotune.enabled = False
        return tf.data.Dataset.from_tensor_slices(x).batch(batch).with_options(options)

    variants = {
        "predict(numpy)": lambda: model.predict(x, batch_size=batch, verbose=0),
        "predict(dataset, autotune off)": lambda: model.predict(no_autotune(), verbose=0),
        "predict_on_batch loop": lambda: [model.predict_on_batch(x[i:i + batch]) for i in range(0, len(x), batch)],
    }
    for run in variants.values():
        run()
    print(f"2. Keras {keras.__version__}: {batches} batches of {batch}, wall/CPU seconds per call")
    times = {name: [] for name in variants}
    for _ in range(trials):
        for name, run in variants.items():  # interleaved
            cpu, start = cpu_seconds(), time.perf_counter()
            run()
            times[name].append(f"{time.perf_counter() - start:.2f}/{cpu_seconds() - cpu:.2f}")
    for name, values in times.items():
        print(f"   {name:32s} " + " ".join(values))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--work-ms", type=float, default=200.0,
                        help="CPU work per batch in part 1 (0: sleep 0.2 s instead)")
    parser.add_argument("--part", choices=("both", "tfdata", "keras"), default="both")
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs")
    if args.part in ("both", "tfdata"):
        part_tfdata(args.trials, calibrated_work(args.work_ms))
    if args.part in ("both", "keras"):
        part_keras(args.trials)


if __name__ == "__main__":
    main()
