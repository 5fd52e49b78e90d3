"""Inference and training throughput of ADTRS on this machine (prints a table).

Each configuration runs in its own subprocess so its peak memory (max RSS) is
its own. Reports the median crops/s over `--repeats` timed runs after a
warm-up (graph tracing excluded), and the ratio to the measured float32
matrix-multiply ceiling (8.2 GFLOP per 224 crop forward, x3 for training,
two passes per step).

    python benchmarks/throughput.py [--crop-size 224] [--batch-sizes 8 32] [--repeats 3]
        [--execution graph|eager|xla]

`--execution` picks how Keras runs the model: `graph` (the default:
`tf.function` for inference, `fit`'s compiled step for training), `eager`
(a plain `model(x)` call; `run_eagerly=True` for training) or `xla`
(`jit_compile=True`). Comparing them (and runs at other commits) is how the
before/after table in the README was made.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

FORWARD_GFLOP_224 = 8.2  # ResNet50 at 224; the ADTRS block and head add ~2%


def matmul_ceiling_gflops(size=2048, repeats=5):
    import numpy as np
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    tf.linalg.matmul(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9, float(np.median(times))


def child(mode, batch, crop, repeats, steps, execution):
    import resource

    import keras
    import numpy as np
    import tensorflow as tf

    import keras_adtrs

    keras.utils.set_random_seed(0)
    model = keras_adtrs.build_adtrs(crop_size=crop, backbone_weights=None, score_scale=20.0, score_offset=50.0)
    x = np.random.default_rng(0).uniform(0, 255, (batch, crop, crop, 3)).astype("float32")
    y = np.random.default_rng(1).uniform(0, 100, batch).astype("float32")
    jit = execution == "xla"
    if mode == "inference":
        if execution == "eager":
            run = lambda: model(x, training=False).numpy()  # noqa: E731
        else:
            fn = tf.function(lambda t: model(t, training=False), jit_compile=jit)
            run = lambda: fn(x).numpy()  # noqa: E731
    elif mode == "savedmodel":
        import tempfile

        from keras_adtrs.export import export_model

        path = export_model(model, tempfile.mkdtemp(), num_crops=1)
        loaded = tf.saved_model.load(path)
        sig = loaded.signatures["serving_images"]
        images = tf.constant(x.astype("uint8"))
        run = lambda: sig(images=images)  # noqa: E731
    else:
        model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=jit, run_eagerly=execution == "eager")
        model.train_on_batch(x, y)
        run = lambda: [model.train_on_batch(x, y) for _ in range(steps)]  # noqa: E731
    run()
    per_run = batch * (steps if mode == "training" else 1)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(per_run / (time.perf_counter() - start))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rates": rates, "peak_mib": peak_mib}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--modes", nargs="+", default=["inference", "savedmodel", "training"], choices=["inference", "savedmodel", "training"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=1, help="training steps per timed run")
    parser.add_argument("--execution", choices=["graph", "eager", "xla"], default="graph")
    parser.add_argument("--jit-compile", action="store_true", help="same as --execution xla")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.jit_compile:
        args.execution = "xla"
    if args.child:
        import keras_adtrs  # noqa: F401  (quiet start-up)

        child(args.child[0], int(args.child[1]), args.crop_size, args.repeats, args.train_steps, args.execution)
        return 0
    import keras_adtrs  # noqa: F401

    ceiling, _ = matmul_ceiling_gflops()
    gflop = FORWARD_GFLOP_224 * (args.crop_size / 224) ** 2
    rows = []
    for mode in args.modes:
        for batch in args.batch_sizes:
            cmd = [sys.executable, __file__, "--child", mode, str(batch), "--crop-size", str(args.crop_size),
                   "--repeats", str(args.repeats), "--train-steps", str(args.train_steps), "--execution", args.execution]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                rows.append((mode, batch, "failed", "", "", out.stderr.strip().splitlines()[-1][:60]))
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rate = statistics.median(result["rates"])
            flops = gflop * (6 if mode == "training" else 1)  # training: 2 passes x (forward + backward ~ 3x)
            rows.append((mode, batch, f"{rate:.2f}", f"{rate * flops / ceiling:.0%}", f"{result['peak_mib']:.0f}", " ".join(f"{r:.2f}" for r in result["rates"])))
    print(f"matmul ceiling: {ceiling:.1f} GFLOP/s (float32, 2048^3, median of 5); crop {args.crop_size}: {gflop:.2f} GFLOP/forward; "
          f"execution: {args.execution}")
    headers = ("mode", "batch", "crops/s (median)", "of ceiling", "peak MiB", "runs")
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
