"""Inference and training throughput of ADTRS on this machine (prints a table).

Each row runs in its own subprocess, so its peak memory (max RSS) is its own.
A process times `--repeats` runs after a warm-up (graph tracing excluded);
with `--rounds N` every row runs N times, the rows interleaved (row 1, row 2,
..., row 1, row 2, ...), so that a noisy spell on a shared machine falls on
all of them alike. The table shows the median over all timed runs, the ratio
to the float32 matrix-multiply ceiling that the script measures first, and
the peak memory.

Modes (crops/s counts the crops the network sees):

- `inference`: `model(x, training=False)` in a `tf.function`;
- `predict`: `model.predict` over four batches;
- `score`: `keras_adtrs.score` on 384x512 images, 9 grid crops per image,
  `batch_size` crops per forward call (crop extraction included);
- `savedmodel`: the exported SavedModel's `serving_images` signature;
- `training`: `fit`'s compiled step (`train_on_batch`), two passes per step;
- `keras_resnet50_forward`, `keras_resnet50_training`: bare
  `keras.applications.ResNet50` (pooled features, an L1 loss on one Dense
  output): the yardstick the speed issue quotes for this machine.

`--torch-baseline` adds, after each `inference` and `training` row, the same
mode and batch of `benchmarks/authors_pattern_torch.py` (the authors' pass
counts in PyTorch; needs torch) and prints the ratios.

    python benchmarks/throughput.py [--crop-size 224] [--batch-sizes 8 32] [--repeats 3]
        [--rounds 1] [--modes ...] [--torch-baseline] [--execution graph|eager|xla]

`--execution` picks how Keras runs the model: `graph` (the default:
`tf.function` for inference, `fit`'s compiled step for training), `eager`
(a plain `model(x)` call; `run_eagerly=True` for training) or `xla`
(`jit_compile=True`). Comparing them (and runs at other commits) is how the
before/after table in docs/benchmarks.md was made.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from keras_adtrs.console import quiet_tensorflow

FORWARD_GFLOP_224 = 8.2  # ResNet50 at 224; the ADTRS block and head add ~2%
MODES = (
    "inference",
    "predict",
    "score",
    "savedmodel",
    "training",
    "keras_resnet50_forward",
    "keras_resnet50_training",
)
DEFAULT_MODES = ("inference", "predict", "score", "savedmodel", "training")
#: Forward-pass equivalents per crop: training is forward + backward (~3x) of
#: two passes; the authors' pattern runs two passes at inference and four per
#: training step, two of them with gradients (2 x 3 + 2).
FORWARD_EQUIVALENTS = {"training": 6, "keras_resnet50_training": 3}
TORCH_FORWARD_EQUIVALENTS = {"inference": 2, "training": 8}
TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "authors_pattern_torch.py")


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


def keras_resnet50_runner(mode, x, jit):
    """A step of bare `keras.applications.ResNet50` (the issue's yardstick)."""
    import keras
    import tensorflow as tf

    backbone = keras.applications.ResNet50(
        weights=None, include_top=False, pooling="avg", input_shape=x.shape[1:]
    )
    if mode == "keras_resnet50_forward":
        fn = tf.function(lambda t: backbone(t, training=False), jit_compile=jit)
        return lambda: fn(x).numpy()
    model = keras.Model(backbone.input, keras.layers.Dense(1)(backbone.output))
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mae", jit_compile=jit)
    y = x[:, 0, 0, :1] * 0.0
    return lambda: model.train_on_batch(x, y)


def child(mode, batch, crop, repeats, steps, execution):
    """Times one row in this process; prints `{"rates": [...], "peak_mib": ...}`."""
    import resource

    import keras
    import numpy as np
    import tensorflow as tf

    import keras_adtrs

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).uniform(0, 255, (batch, crop, crop, 3)).astype("float32")
    y = np.random.default_rng(1).uniform(0, 100, batch).astype("float32")
    jit = execution == "xla"
    per_run = batch
    if not mode.startswith("keras_resnet50"):
        model = keras_adtrs.build_adtrs(crop_size=crop, backbone_weights=None, score_scale=20.0, score_offset=50.0)
    if mode.startswith("keras_resnet50"):
        run = keras_resnet50_runner(mode, x, jit)
    elif mode == "inference":
        if execution == "eager":
            run = lambda: model(x, training=False).numpy()  # noqa: E731
        else:
            fn = tf.function(lambda t: model(t, training=False), jit_compile=jit)
            run = lambda: fn(x).numpy()  # noqa: E731
    elif mode == "predict":
        if jit:
            model.compile(jit_compile=True)
        crops = np.concatenate([x] * 4)
        per_run = len(crops)
        run = lambda: model.predict(crops, batch_size=batch, verbose=0)  # noqa: E731
    elif mode == "score":
        images = list(np.random.default_rng(2).integers(0, 256, (-(-4 * batch // 9), 384, 512, 3), dtype=np.uint8))
        per_run = 9 * len(images)
        run = lambda: keras_adtrs.score(model, images, crops=9, batch_size=batch)  # noqa: E731
    elif mode == "savedmodel":
        import tempfile

        from keras_adtrs.serving.export import export_model

        export_dir = tempfile.TemporaryDirectory()  # removed when this process exits
        path = export_model(model, export_dir.name, num_crops=1)
        loaded = tf.saved_model.load(path)
        sig = loaded.signatures["serving_images"]
        images = tf.constant(x.astype("uint8"))
        run = lambda: sig(images=images)  # noqa: E731
    elif mode == "training":
        model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=jit, run_eagerly=execution == "eager")
        model.train_on_batch(x, y)
        run = lambda: [model.train_on_batch(x, y) for _ in range(steps)]  # noqa: E731
        per_run = batch * steps
    run()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(per_run / (time.perf_counter() - start))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rates": rates, "peak_mib": peak_mib}))


def measure(row, args):
    """Runs one row in a subprocess: `(rates, peak_mib)` or `(None, error line)`."""
    kind, mode, batch = row
    if kind == "torch":
        cmd = [sys.executable, TORCH_SCRIPT, "--row", mode, str(batch), "--crop-size", str(args.crop_size)]
    else:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, str(batch), "--crop-size",
               str(args.crop_size), "--repeats", str(args.repeats), "--train-steps", str(args.train_steps),
               "--execution", args.execution]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or ["no output"]
        return None, lines[-1][:80]
    last = out.stdout.strip().splitlines()[-1]
    if kind == "torch":  # "ROW <crops/s> <peak MiB>": one median per process
        rate, peak = last.split("ROW ")[1].split()
        return [float(rate)], float(peak)
    result = json.loads(last)
    return result["rates"], result["peak_mib"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES), choices=MODES)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per process")
    parser.add_argument("--rounds", type=int, default=1, help="processes per row, rows interleaved")
    parser.add_argument("--train-steps", type=int, default=1, help="training steps per timed run")
    parser.add_argument("--torch-baseline", action="store_true",
                        help="also time benchmarks/authors_pattern_torch.py for each inference and training row")
    parser.add_argument("--execution", choices=["graph", "eager", "xla"], default="graph")
    parser.add_argument("--jit-compile", action="store_true", help="same as --execution xla")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jit_compile:
        args.execution = "xla"
    if args.child:
        quiet_tensorflow()
        child(args.child[0], int(args.child[1]), args.crop_size, args.repeats, args.train_steps, args.execution)
        return 0
    if args.torch_baseline:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            parser.error("--torch-baseline needs PyTorch: pip install torch --index-url https://download.pytorch.org/whl/cpu")
    quiet_tensorflow()
    ceiling, _ = matmul_ceiling_gflops()
    gflop = FORWARD_GFLOP_224 * (args.crop_size / 224) ** 2
    rows = []
    for mode in args.modes:
        for batch in args.batch_sizes:
            rows.append(("keras_adtrs", mode, batch))
            if args.torch_baseline and mode in TORCH_FORWARD_EQUIVALENTS:
                rows.append(("torch", mode, batch))
    rates = {row: [] for row in rows}
    peaks = {row: 0.0 for row in rows}
    errors = {}
    for _ in range(args.rounds):
        for row in rows:
            if row in errors:
                continue
            values, peak = measure(row, args)
            if values is None:
                errors[row] = peak
                continue
            rates[row] += values
            peaks[row] = max(peaks[row], peak)
    table = []
    medians = {}
    for row in rows:
        kind, mode, batch = row
        name = f"{mode} (authors' pattern, torch)" if kind == "torch" else mode
        if row in errors:
            table.append((name, batch, "failed", "", "", errors[row]))
            continue
        rate = medians[row] = statistics.median(rates[row])
        equivalents = (TORCH_FORWARD_EQUIVALENTS if kind == "torch" else FORWARD_EQUIVALENTS).get(mode, 1)
        table.append((name, batch, f"{rate:.2f}", f"{rate * gflop * equivalents / ceiling:.0%}", f"{peaks[row]:.0f}",
                      " ".join(f"{r:.2f}" for r in rates[row])))
    print(f"matmul ceiling: {ceiling:.1f} GFLOP/s (float32, 2048^3, median of 5); crop {args.crop_size}: "
          f"{gflop:.2f} GFLOP/forward; execution: {args.execution}; {args.rounds} round(s) x {args.repeats} run(s)")
    headers = ("mode", "batch", "crops/s (median)", "of ceiling", "peak MiB", "runs")
    widths = [max(len(str(h)), *(len(str(r[i])) for r in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for line in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)))
    ratios = [(mode, batch, medians[("keras_adtrs", mode, batch)] / medians[("torch", mode, batch)])
              for (kind, mode, batch) in rows
              if kind == "torch" and ("torch", mode, batch) in medians and ("keras_adtrs", mode, batch) in medians]
    if ratios:
        print()
        print("keras_adtrs / authors' pattern in torch (same machine, interleaved): "
              + ", ".join(f"{mode} b{batch} {ratio:.2f}x" for mode, batch, ratio in ratios))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
