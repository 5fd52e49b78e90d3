"""Throughput of ADTRS against the authors' own PyTorch code, on this machine (prints a table).

Each row runs in its own subprocess, so its peak memory (max RSS) is its own.
A process times `--repeats` runs after a warm-up (graph tracing excluded);
with `--rounds N` every row runs N times, the rows interleaved (row 1, row 2,
..., row 1, row 2, ...), so that a noisy spell on a shared machine falls on
all of them alike. The table shows, per row, the median over all timed runs,
the ratio to the authors' code at the same batch (inference paths against
their test forward, training rows against their training step), the share of
the matrix-multiply ceiling that the script measures (float32 rows against a
float32 ceiling, bfloat16 rows against a bfloat16 one) and the peak memory.

Rows (`--modes`; crops/s counts the crops scored or trained on):

- `inference`: `model(x, training=False)` in a `tf.function`;
- `predict`: `model.predict` over four batches, on the model as trained;
- `predict_constant`: the same on the inference copy with constant weights
  (`fold_batchnorm`, then `use_constant_weights`): what `keras_adtrs.score`,
  the commands and the Beam job run for jobs of at least
  `CONSTANT_WEIGHTS_MIN_CROPS` crops. Its BatchNorm statistics are set away
  from their initial values first (`constant_weights.trained_like`), as
  training would: a fresh model's fold into zero biases, which TensorFlow
  drops from a graph of constants;
- `score`: `keras_adtrs.score` on `batch` one-crop images of the crop size,
  at its default `batch_size` (a handful of images, the common call);
- `score_grid`: `keras_adtrs.score` on `batch` arrays of 384x512 pixels, 9
  grid crops each, `batch_size` crops per forward call (crops included): 9
  full calls, none padded;
- `predict_cli`: the predict command's `main()` on a folder of 32 JPEG files
  of 384x512, 9 crops each, `--batch-size batch`, in this process: loading
  the `.keras` file and folding its BatchNorm included, Python's start and
  imports not; in the row's precision (`--precision`);
- `predict_files`: what the predict command runs once its model is loaded
  and folded: `score_files` on the same 32 JPEG files (decoding included);
- `evaluate`: `keras_adtrs.inference.evaluation.evaluate_model` on a data
  set of `batch` 384x512 images, 9 grid crops each, `batch_size` crops per forward
  call (what `python -m keras_adtrs.evaluate` runs, without the bootstrap);
- `savedmodel`: the exported SavedModel's `serving_images` signature
  (BatchNorm folded, the export's default);
- `training`: `fit`'s compiled step (`train_on_batch`), two passes per step;
- `authors_test`: the authors' `Net` in `eval()` under `torch.no_grad()`, as
  their `test` calls it (each call also runs the mirrored crop);
- `authors_train`: the authors' training step as their `run.py` runs it: the
  crops and their mirror, each forward also running its own mirror, the L1
  and consistency losses, `backward`, `Adam(weight_decay=5e-4)` (their
  ranking terms, scalar arithmetic on the batch's scores, are left out, as
  in `time_authors.py`);
- `keras_resnet50_forward`, `keras_resnet50_training`: bare
  `keras.applications.ResNet50` (pooled features; an L1 loss on one Dense
  output), a yardstick.

A mode may carry a precision, `MODE:PRECISION` (`float32`, `mixed_bfloat16`,
`mixed_float16`; default float32), for instance `training:mixed_bfloat16`.
Rows in a precision this machine lacks are skipped with a message
(`keras_adtrs.models.precision.check_precision`). A bfloat16 row's `x fp32`
column is its speed over the same mode's float32 row.

Every row also reports what the machine gave it: `cpu/wall` (the process's
CPU seconds per wall second while timed: about the number of cores it got)
and `steal` (the share of the machine's CPU time the hypervisor took while
it ran, from /proc/stat). A row at half speed with `cpu/wall` near 1 and a
high `steal` ran on a shared host's leftovers, not slower code.

The authors' code is imported at run time from `--authors-dir` (default
`../shared/reference/authors_adtrs` beside the repository: their `models.py`,
`Attention4DD.py`, `resnet.py`, MIT licence), never copied here; torchvision,
timm and their data loader, which this path does not use, are stubbed. Their
rows are skipped with a message when that folder or torch is missing
(`pip install torch`, the CPU wheel). Their weights are random, as ours.

    python benchmarks/throughput.py [--crop-size 224] [--batch-sizes 8 32] [--repeats 3]
        [--rounds 1] [--modes ...] [--authors-dir DIR] [--threads N] [--execution graph|eager|xla]

`--execution` picks how Keras runs the model: `graph` (the default:
`tf.function` for inference, `fit`'s compiled step for training), `eager`
(a plain `model(x)` call; `run_eagerly=True` for training) or `xla`
(`jit_compile=True`).
"""

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # a script in the checkout times the checkout's package (and its children too)

from keras_adtrs.console import quiet_tensorflow  # noqa: E402
DEFAULT_AUTHORS_DIR = os.path.normpath(os.path.join(REPO, "..", "shared", "reference", "authors_adtrs"))
FORWARD_GFLOP_224 = 8.2  # ResNet50 at 224; the ADTRS block and head add ~2%
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
INFERENCE_MODES = ("inference", "predict", "predict_constant", "score", "score_grid", "predict_cli", "predict_files",
                   "evaluate", "savedmodel")
TRAINING_MODES = ("training",)
AUTHORS_MODES = ("authors_test", "authors_train")
YARDSTICKS = ("keras_resnet50_forward", "keras_resnet50_training")
MODES = INFERENCE_MODES + TRAINING_MODES + AUTHORS_MODES + YARDSTICKS
DEFAULT_MODES = (
    "authors_test", "predict", "predict_constant", "score_grid", "predict_cli", "predict_files", "evaluate",
    "savedmodel", "predict:mixed_bfloat16", "predict_constant:mixed_bfloat16", "score_grid:mixed_bfloat16",
    "predict_cli:mixed_bfloat16",
    "predict_files:mixed_bfloat16", "evaluate:mixed_bfloat16",
    "savedmodel:mixed_bfloat16", "authors_train", "training", "training:mixed_bfloat16",
)
#: Forward-pass equivalents per crop (backward ~2x forward): our training step
#: runs two passes with gradients (2 x 3); the authors' test forward runs two
#: passes, their training step four, two of them with gradients (2 x 3 + 2).
FORWARD_EQUIVALENTS = {"training": 6, "keras_resnet50_training": 3, "authors_test": 2, "authors_train": 8}
#: The authors' row each row is compared with.
BASELINE = {**{m: "authors_test" for m in INFERENCE_MODES + ("keras_resnet50_forward",)},
            "training": "authors_train", "keras_resnet50_training": "authors_train"}
CLI_IMAGES, CLI_CROPS, GRID_IMAGE = 32, 9, (384, 512)


def parse_mode(text):
    """`"training:mixed_bfloat16"` -> `("training", "mixed_bfloat16")`; raises ValueError naming bad parts."""
    mode, _, precision = text.partition(":")
    precision = precision or "float32"
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} in {text!r}; choose from {', '.join(PRECISIONS)}")
    if precision != "float32" and (mode in AUTHORS_MODES or mode in YARDSTICKS):
        raise ValueError(f"{mode} runs in float32 only, got {text!r}")
    return mode, precision


# ------------------------------------------------------------------ children
def peak_mib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def steal_jiffies():
    """`(steal, total)` jiffies of the whole machine from /proc/stat (zeros where unreadable)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def time_runs(run, repeats, per_run):
    """One warm-up, then `repeats` timed runs: `(crops/s of each, CPU seconds per wall second, steal share)`."""
    run()
    rates = []
    cpu0, (steal0, total0), wall = time.process_time(), steal_jiffies(), 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        wall += elapsed
        rates.append(per_run / elapsed)
    steal1, total1 = steal_jiffies()
    stolen = (steal1 - steal0) / (total1 - total0) if total1 > total0 else 0.0
    return rates, (time.process_time() - cpu0) / wall if wall else 0.0, stolen


def ceiling_child(size=2048, repeats=5):
    """Matrix-multiply ceilings (GFLOP/s) of TensorFlow on this machine, float32 and bfloat16."""
    import tensorflow as tf

    result = {}
    for dtype in ("float32", "bfloat16"):
        a = tf.cast(tf.random.normal((size, size)), dtype)
        b = tf.cast(tf.random.normal((size, size)), dtype)
        tf.linalg.matmul(a, b).numpy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            tf.linalg.matmul(a, b).numpy()
            times.append(time.perf_counter() - start)
        result[dtype] = 2 * size**3 / statistics.median(times) / 1e9
    print(json.dumps(result))


def keras_resnet50_runner(mode, x, jit):
    """A step of bare `keras.applications.ResNet50` (the yardstick)."""
    import keras
    import tensorflow as tf

    backbone = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg", input_shape=x.shape[1:])
    if mode == "keras_resnet50_forward":
        fn = tf.function(lambda t: backbone(t, training=False), jit_compile=jit)
        return lambda: fn(x).numpy()
    model = keras.Model(backbone.input, keras.layers.Dense(1)(backbone.output))
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mae", jit_compile=jit)
    y = x[:, 0, 0, :1] * 0.0
    return lambda: model.train_on_batch(x, y)


def _jpeg_folder(folder, count, size, rng):
    from PIL import Image

    for i in range(count):
        pixels = rng.integers(0, 256, size + (3,), dtype="uint8")
        Image.fromarray(pixels).save(os.path.join(folder, f"image_{i:03d}.jpg"), quality=90)


def keras_child(mode, precision, batch, crop, repeats, steps, execution):
    """Times one of our rows in this process; prints `{"rates": [...], "peak_mib": ...}`."""
    import contextlib
    import io
    import tempfile

    import keras
    import numpy as np
    import tensorflow as tf

    import keras_adtrs
    from keras_adtrs.models.precision import check_precision

    check_precision(precision)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, crop, crop, 3)).astype("float32")
    y = np.random.default_rng(1).uniform(0, 100, batch).astype("float32")
    jit = execution == "xla"
    per_run = batch
    scratch = tempfile.TemporaryDirectory()  # removed when this process exits
    if mode.startswith("keras_resnet50"):
        run = keras_resnet50_runner(mode, x, jit)
    else:
        model = keras_adtrs.build_adtrs(crop_size=crop, backbone_weights=None, score_scale=20.0, score_offset=50.0,
                                        precision=precision)
    if mode == "inference":
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
    elif mode == "predict_constant":
        from constant_weights import trained_like  # benchmarks/constant_weights.py

        trained_like(model)
        model = keras_adtrs.fold_batchnorm(model)
        if not model.use_constant_weights():
            raise RuntimeError("constant weights need the TensorFlow backend")
        crops = np.concatenate([x] * 4)
        per_run = len(crops)
        run = lambda: model.predict(crops, batch_size=batch, verbose=0)  # noqa: E731
    elif mode == "score":
        images = list(rng.integers(0, 256, (batch, crop, crop, 3), dtype=np.uint8))
        run = lambda: keras_adtrs.score(model, images, crops=1)  # noqa: E731
    elif mode == "score_grid":
        images = list(rng.integers(0, 256, (batch,) + GRID_IMAGE + (3,), dtype=np.uint8))
        per_run = 9 * len(images)
        run = lambda: keras_adtrs.score(model, images, crops=9, batch_size=batch)  # noqa: E731
    elif mode == "predict_cli":
        from keras_adtrs import predict as predict_command

        path = os.path.join(scratch.name, "model.keras")
        model.save(path)
        del model
        folder = os.path.join(scratch.name, "images")
        os.mkdir(folder)
        _jpeg_folder(folder, CLI_IMAGES, GRID_IMAGE, rng)
        # The command's own default is auto: the row's precision is passed, or a float32 row would run bfloat16.
        argv = [folder, "--model", path, "--batch-size", str(batch), "--crops", str(CLI_CROPS), "--format", "csv",
                "--no-progress", "--precision", precision]
        per_run = CLI_IMAGES * CLI_CROPS

        def run():
            with contextlib.redirect_stdout(io.StringIO()):
                status = predict_command.main(argv)
            if status:
                raise RuntimeError(f"predict exited with {status}")
    elif mode == "predict_files":
        from keras_adtrs.models.folding import folded_for_inference
        from keras_adtrs.models.scoring import score_files

        model = folded_for_inference(model)  # as the command does after loading the file
        folder = os.path.join(scratch.name, "images")
        os.mkdir(folder)
        _jpeg_folder(folder, CLI_IMAGES, GRID_IMAGE, rng)
        paths = sorted(os.path.join(folder, name) for name in os.listdir(folder))
        per_run = CLI_IMAGES * CLI_CROPS
        run = lambda: score_files(model, paths, crops=CLI_CROPS, batch_size=batch)  # noqa: E731
    elif mode == "evaluate":
        from keras_adtrs.data.source import IQASource
        from keras_adtrs.inference.evaluation import evaluate_model

        images = list(rng.integers(0, 256, (batch,) + GRID_IMAGE + (3,), dtype=np.uint8))
        source = IQASource("benchmark", images, np.linspace(0, 100, len(images), dtype=np.float32),
                           np.arange(len(images)), [f"{i}.png" for i in range(len(images))])
        per_run = 9 * len(images)
        run = lambda: evaluate_model(model, source, crops=9, batch_size=batch, bootstrap=0)  # noqa: E731
    elif mode == "savedmodel":
        from keras_adtrs.serving.export import export_model

        path = export_model(model, scratch.name, num_crops=1)
        sig = tf.saved_model.load(path).signatures["serving_images"]
        images = tf.constant(x.astype("uint8"))
        run = lambda: sig(images=images)  # noqa: E731
    elif mode == "training":
        model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=jit, run_eagerly=execution == "eager")
        model.train_on_batch(x, y)
        run = lambda: [model.train_on_batch(x, y) for _ in range(steps)]  # noqa: E731
        per_run = batch * steps
    rates, cpu_per_wall, steal = time_runs(run, repeats, per_run)
    print(json.dumps({"rates": rates, "peak_mib": peak_mib(), "cpu_per_wall": cpu_per_wall, "steal": steal}))


def load_authors_net(authors_dir):
    """The authors' `Net` (random weights), imported from `authors_dir` with its unused imports stubbed."""
    import tempfile
    import types

    sys.path.insert(0, authors_dir)
    import resnet as authors_resnet  # their resnet.py

    # models.py imports torchvision, timm and their data loader at module level; this path uses none.
    tv, tvm = types.ModuleType("torchvision"), types.ModuleType("torchvision.models")
    tvm.resnet50 = lambda pretrained=False, **kw: authors_resnet.resnet50()  # no download: random weights
    tv.models = tvm
    timm, timm_layers = types.ModuleType("timm"), types.ModuleType("timm.layers")
    timm_layers.to_2tuple = lambda x: x if isinstance(x, (tuple, list)) else (x, x)
    timm.layers = timm_layers
    for name, module in {"torchvision": tv, "torchvision.models": tvm, "timm": timm, "timm.layers": timm_layers,
                         "data_loader": types.ModuleType("data_loader")}.items():
        sys.modules.setdefault(name, module)
    import models as authors_models  # their models.py

    config = types.SimpleNamespace(network="resnet50", nheadt=16, num_encoder_layerst=4, dim_feedforwardt=64)
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # Net() writes and removes a weights file in the working directory
        try:
            net = authors_models.Net(config, device="cpu")
        finally:
            os.chdir(here)
    return net


def authors_child(mode, batch, crop, repeats, steps, authors_dir, threads):
    """Times the authors' code in this process; prints `{"rates": [...], "peak_mib": ...}`."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    net = load_authors_net(authors_dir)
    x = torch.randn(batch, 3, crop, crop)
    if mode == "authors_test":
        net.eval()

        def run():
            with torch.no_grad():
                net(x)

        per_run = batch
    else:
        net.train()
        optimizer = torch.optim.Adam(net.parameters(), lr=2e-5, weight_decay=5e-4)
        l1 = torch.nn.L1Loss()
        y = torch.rand(batch) * 100

        def step():
            net.zero_grad()
            pred, closs = net(x)
            pred2, closs2 = net(torch.flip(x, [3]))
            loss = l1(pred.squeeze(), y) + l1(pred2.squeeze(), y) + closs + closs2
            loss.backward()
            optimizer.step()

        def run():
            for _ in range(steps):
                step()

        per_run = batch * steps
    rates, cpu_per_wall, steal = time_runs(run, repeats, per_run)
    print(json.dumps({"rates": rates, "peak_mib": peak_mib(), "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "cpu_per_wall": cpu_per_wall, "steal": steal}))


# -------------------------------------------------------------------- parent
def authors_unavailable(authors_dir):
    """Why the authors' rows cannot run (a message), or None."""
    import importlib.util

    missing = [f for f in ("models.py", "Attention4DD.py", "resnet.py")
               if not os.path.isfile(os.path.join(authors_dir, f))]
    if missing:
        return f"the authors' code is not in {authors_dir} (missing {', '.join(missing)}; see --authors-dir)"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install torch, the CPU wheel)"
    return None


def run_child(args, *child):
    """Runs this script with `--child ...` in a subprocess: its JSON result, or `(None, error line)`."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *child, "--crop-size", str(args.crop_size),
           "--repeats", str(args.repeats), "--train-steps", str(args.train_steps), "--execution", args.execution,
           "--authors-dir", args.authors_dir, "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode < 0:  # SIGKILL is what the kernel's out-of-memory killer sends
        name = signal.Signals(-out.returncode).name
        return None, f"killed by {name}" + (" (out of memory?)" if out.returncode == -signal.SIGKILL else "")
    if out.returncode != 0:
        lines = [line for line in out.stderr.strip().splitlines() if line.strip()] or ["no output"]
        return None, lines[-1][:160]
    return json.loads(out.stdout.strip().splitlines()[-1]), None


def format_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES),
                        help=f"rows, MODE or MODE:PRECISION; modes: {', '.join(MODES)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per process")
    parser.add_argument("--rounds", type=int, default=1, help="processes per row, rows interleaved")
    parser.add_argument("--train-steps", type=int, default=1, help="training steps per timed run")
    parser.add_argument("--authors-dir", default=DEFAULT_AUTHORS_DIR,
                        help="folder of the authors' models.py, Attention4DD.py, resnet.py "
                        "(default: ../shared/reference/authors_adtrs beside the repository)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch threads for the authors' rows (default: the CPU count, as TensorFlow uses)")
    parser.add_argument("--execution", choices=["graph", "eager", "xla"], default="graph")
    parser.add_argument("--jit-compile", action="store_true", help="same as --execution xla")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jit_compile:
        args.execution = "xla"
    if args.child:
        quiet_tensorflow()
        if args.child[0] == "ceiling":
            ceiling_child()
        elif args.child[0] in AUTHORS_MODES:
            authors_child(args.child[0], int(args.child[2]), args.crop_size, args.repeats, args.train_steps,
                          args.authors_dir, args.threads)
        else:
            keras_child(args.child[0], args.child[1], int(args.child[2]), args.crop_size, args.repeats,
                        args.train_steps, args.execution)
        return 0
    try:
        modes = [parse_mode(m) for m in args.modes]
    except ValueError as error:
        parser.error(str(error))
    if args.crop_size % 32 or not 64 <= args.crop_size <= 512:
        parser.error(f"--crop-size must be a multiple of 32 from 64 to 512, got {args.crop_size}")
    started = time.time()
    skipped = []
    # The crop size is checked first: it depends on the arguments alone, not on what is installed.
    if args.crop_size != 224 and any(m in AUTHORS_MODES for m, _ in modes):
        skipped.append(f"authors' rows skipped: their attention block is built for 224-pixel crops "
                       f"(a 7x7 layer-4 map), not {args.crop_size}")
        modes = [(m, p) for m, p in modes if m not in AUTHORS_MODES]
    why_not_authors = authors_unavailable(args.authors_dir)
    if why_not_authors and any(m in AUTHORS_MODES for m, _ in modes):
        skipped.append(f"authors' rows skipped: {why_not_authors}")
        modes = [(m, p) for m, p in modes if m not in AUTHORS_MODES]
    wanted = sorted({p for _, p in modes} - {"float32"})
    if wanted:
        quiet_tensorflow()
        from keras_adtrs.models.precision import precision_support

        for precision in wanted:
            ok, device = precision_support(precision)
            if not ok:
                skipped.append(f"{precision} rows skipped: this machine has {device}")
                modes = [(m, p) for m, p in modes if p != precision]
    ceilings, error = run_child(args, "ceiling")
    if ceilings is None:
        parser.exit(1, f"the matrix-multiply ceiling could not be measured: {error}\n")
    rows = [(mode, precision, batch) for mode, precision in modes for batch in args.batch_sizes]
    rates = {row: [] for row in rows}
    peaks = {row: 0.0 for row in rows}
    machine = {row: [] for row in rows}  # (cpu/wall, steal) of each process
    errors = {}
    for _ in range(args.rounds):
        for row in rows:
            if row in errors:
                continue
            result, error = run_child(args, row[0], row[1], str(row[2]))
            if result is None:
                errors[row] = error
                continue
            rates[row] += result["rates"]
            peaks[row] = max(peaks[row], result["peak_mib"])
            machine[row].append((result.get("cpu_per_wall", 0.0), result.get("steal", 0.0)))
    ceilings_after, _ = run_child(args, "ceiling")
    gflop = FORWARD_GFLOP_224 * (args.crop_size / 224) ** 2
    medians = {row: statistics.median(v) for row, v in rates.items() if v}
    table = []
    for row in rows:
        mode, precision, batch = row
        name = mode if precision == "float32" else f"{mode}:{precision}"
        if row in errors:
            table.append((name, batch, "failed", "", "", "", "", "", "", errors[row]))
            continue
        rate = medians[row]
        baseline = medians.get((BASELINE.get(mode), "float32", batch))
        ratio = f"{rate / baseline:.2f}x" if baseline else ""
        float32 = medians.get((mode, "float32", batch)) if precision != "float32" else None
        over_float32 = f"{rate / float32:.2f}x" if float32 else ""
        ceiling = ceilings["bfloat16" if precision == "mixed_bfloat16" else "float32"]
        share = rate * gflop * FORWARD_EQUIVALENTS.get(mode, 1) / ceiling
        cpu = statistics.median(c for c, _ in machine[row]) if machine[row] else 0.0
        steal = max(st for _, st in machine[row]) if machine[row] else 0.0
        table.append((name, batch, f"{rate:.2f}", ratio, over_float32, f"{share:.0%}", f"{cpu:.2f}", f"{steal:.0%}",
                      f"{peaks[row]:.0f}",
                      " ".join(f"{r:.2f}" for r in rates[row])))
    print(f"matmul ceilings (TensorFlow, 2048^3, median of 5): float32 {ceilings['float32']:.0f} GFLOP/s, "
          f"bfloat16 {ceilings['bfloat16']:.0f} GFLOP/s"
          + (f" (after the rows: {ceilings_after['float32']:.0f}, {ceilings_after['bfloat16']:.0f})"
             if ceilings_after else ""))
    print(f"crop {args.crop_size}: {gflop:.2f} GFLOP/forward; execution: {args.execution}; "
          f"{args.rounds} round(s) x {args.repeats} run(s); torch threads {args.threads}; "
          f"{math.ceil(time.time() - started)} s")
    print(format_table(("mode", "batch", "crops/s (median)", "x authors", "x fp32", "of ceiling", "cpu/wall", "steal",
                        "peak MiB", "runs"), table))
    for line in skipped:
        print(line)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
