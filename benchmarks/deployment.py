"""Every deployment artifact against the Keras model, on this machine (prints a table).

For one model (`--model M.keras`, or a seeded random-weight model with a
random score head, so that scores differ between images) the script writes,
in a temporary folder that it removes:

- the TF Serving SavedModel (`keras_adtrs.serving.export.export_model`, 9 and
  1 crops per image),
- LiteRT float32, float16 and int8 (dynamic range) (`export_litert`),
- ONNX, opset 17 (`export_onnx`),

all from the BatchNorm-folded copy, as the export command does, and reports
per artifact:

- size: the file (the SavedModel: its whole version folder);
- latency: the median over `--repeats` calls, after two warm-up calls, of
  one forward call on one image's crops, 1 crop and 9 crops (crops made
  beforehand; the SavedModel's `serving_images` signature takes the decoded
  image and crops it itself); the Keras row is the folded model's
  `predict_on_batch`;
- agreement with Keras on `--count` images (default: the first 100 LIVE-C
  dev images by sorted file name, `Images/trainingImages/` left out): each
  image scored with the 9-crop grid by `keras_adtrs.score` with the artifact
  (the SavedModel: its `serving_default` signature on the file's bytes),
  against `keras_adtrs.score` with the folded Keras model; the largest
  absolute difference, the same as a fraction of the score range `R` the
  tolerances are stated in (the width of the training labels' range when
  known, else 5 label standard deviations:
  `keras_adtrs.serving.artifacts.score_description`), whether it is within
  the stated tolerance, and the SRCC between the two score lists.

The header gives the date, machine, commit, command and load averages (the
machine may be shared: the latencies are only as quiet as it was).

    python benchmarks/deployment.py [--model M.keras] [--crop-size 224] [--images DIR] [--count 100]
        [--repeats 20] [--seed 0] [--threads N] [--artifacts savedmodel litert-float32 ...]
"""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # a script in the checkout measures the checkout's package

from keras_adtrs.console import quiet_tensorflow  # noqa: E402
from keras_adtrs.data.images import expand_paths  # noqa: E402

DEFAULT_IMAGES = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "clive_dev", "ChallengeDB_release", "Images"))
#: (label, format, quantize) of each artifact, in table order.
ARTIFACTS = (
    ("savedmodel", "savedmodel", None),
    ("litert float32", "litert", None),
    ("litert float16", "litert", "float16"),
    ("litert int8", "litert", "int8"),
    ("onnx float32", "onnx", None),
)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a .keras model (default: a seeded random-weight model)")
    parser.add_argument("--crop-size", type=int, default=224, help="crop of the random model (default: 224)")
    parser.add_argument("--images", default=DEFAULT_IMAGES, help="folder of images (default: the LIVE-C dev subset)")
    parser.add_argument("--count", type=int, default=100, help="images scored, first by sorted name (default: 100)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per latency (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random model (default: 0)")
    parser.add_argument("--threads", type=int, default=None, help="LiteRT / ONNX Runtime threads (default: all CPUs)")
    parser.add_argument("--artifacts", nargs="+", choices=[a[0].replace(" ", "-") for a in ARTIFACTS],
                        default=None, help="the artifacts to measure (default: all)")
    return parser


def image_files(folder, count):
    """The first `count` image files of `folder` by sorted name (sub-folders, such as LIVE-C's trainingImages, left out)."""
    top = os.path.dirname(os.path.join(folder, "x"))
    return [path for path in expand_paths([folder]) if os.path.dirname(path) == top][:count]


def random_model(crop_size, seed):
    import keras
    import numpy as np

    import keras_adtrs

    keras.utils.set_random_seed(seed)
    model = keras_adtrs.build_adtrs(crop_size=crop_size, backbone_weights=None, score_scale=10.0, score_offset=50.0)
    kernel = model.network.get_layer("score_dense").kernel  # zero-initialised: give it random weights
    kernel.assign(np.random.default_rng(seed).normal(0.0, 0.01, kernel.shape).astype("float32"))
    return model


def median_ms(call, repeats):
    for _ in range(2):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def folder_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def machine_line():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs visible, {platform.system()} {platform.release()}"


def commit():
    try:
        out = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    import numpy as np
    import tensorflow as tf

    import keras_adtrs
    from keras_adtrs.data.images import load_image
    from keras_adtrs.serving.runtimes import load_artifact
    from keras_adtrs.data.image_crops import image_crops
    from keras_adtrs.metrics import srcc
    from keras_adtrs.models.folding import folded_for_inference
    from keras_adtrs.serving.artifacts import TOLERANCES, artifact_path, score_description
    from keras_adtrs.serving.export import export_model
    from keras_adtrs.serving.export_litert import export_litert
    from keras_adtrs.serving.export_onnx import export_onnx

    started = datetime.datetime.now().astimezone()
    load_before = os.getloadavg()
    paths = image_files(args.images, args.count)
    if not paths:
        print(f"error: no images in {args.images}", file=sys.stderr)
        return 1
    wanted = [a for a in ARTIFACTS if args.artifacts is None or a[0].replace(" ", "-") in args.artifacts]
    work = tempfile.mkdtemp(prefix="adtrs-deployment-")
    try:
        if args.model:
            model_path, source = args.model, args.model
            model = keras_adtrs.load_model(model_path)
        else:
            model = random_model(args.crop_size, args.seed)
            model_path = os.path.join(work, "random.keras")
            model.save(model_path)
            source = f"random weights, seed {args.seed}, score head N(0, 0.01), score_scale 10, score_offset 50"
        folded = folded_for_inference(model)
        crop = int(folded.crop_size)
        width = score_description(folded)["tolerance_range"]

        timings = {}
        made = {}
        for label, fmt, quantize in wanted:
            start = time.perf_counter()
            if fmt == "savedmodel":
                made[label] = export_model(model, os.path.join(work, "savedmodel"), source_model=model_path)
                made["savedmodel 1 crop"] = export_model(model, os.path.join(work, "savedmodel1"), num_crops=1)
            elif fmt == "litert":
                made[label] = export_litert(model, artifact_path(work, "adtrs", fmt, quantize), quantize=quantize,
                                            source_model=model_path)
            else:
                made[label] = export_onnx(model, artifact_path(work, "adtrs", fmt), source_model=model_path)
            timings[label] = time.perf_counter() - start
            print(f"exported {label} in {timings[label]:.0f} s", file=sys.stderr, flush=True)

        # Reference: the folded Keras model, 9-crop grid, keras_adtrs.score.
        reference = keras_adtrs.score(folded, paths, crops=9, batch_size=9)
        first = load_image(paths[0])
        crops9 = image_crops(first, crop, 9)
        crops1 = image_crops(first, crop, 1)
        rows = [("keras (folded)", folder_bytes(model_path),
                 median_ms(lambda: folded.predict_on_batch(crops1), args.repeats),
                 median_ms(lambda: folded.predict_on_batch(crops9), args.repeats), 0.0, 1.0, None)]
        for label, fmt, quantize in wanted:
            if fmt == "savedmodel":
                loaded = tf.saved_model.load(made[label])
                loaded1 = tf.saved_model.load(made["savedmodel 1 crop"])
                images = tf.constant(first[None])
                lat1 = median_ms(lambda: loaded1.signatures["serving_images"](images=images), args.repeats)
                lat9 = median_ms(lambda: loaded.signatures["serving_images"](images=images), args.repeats)
                serve = loaded.signatures["serving_default"]
                scores = np.array([
                    float(serve(image_bytes=tf.constant([open(p, "rb").read()]))["score"].numpy()[0]) for p in paths
                ])
                size = folder_bytes(made[label])
                tolerance = TOLERANCES[None]
            else:
                artifact = load_artifact(made[label], num_threads=args.threads)
                lat1 = median_ms(lambda: artifact.predict_on_batch(crops1), args.repeats)
                lat9 = median_ms(lambda: artifact.predict_on_batch(crops9), args.repeats)
                scores = keras_adtrs.score(artifact, paths, crops=9, batch_size=9)
                size = folder_bytes(made[label])
                tolerance = TOLERANCES[quantize]
            difference = float(np.max(np.abs(np.asarray(scores, np.float64) - reference)))
            rows.append((label, size, lat1, lat9, difference, srcc(scores, reference), tolerance))
            print(f"measured {label}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    load_after = os.getloadavg()
    print(f"date: {started.isoformat(timespec='seconds')}")
    print(f"machine: {machine_line()}")
    print(f"load averages (1, 5, 15 min): {' '.join(f'{v:.2f}' for v in load_before)} before, "
          f"{' '.join(f'{v:.2f}' for v in load_after)} after")
    print(f"commit: {commit()}")
    print(f"command: python benchmarks/deployment.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"versions: {versions()}")
    print(f"model: {source}; crop {crop}; score range R = {width:g}")
    print(f"images: {len(paths)} from {args.images}, 9-crop grid; latency: median of {args.repeats} calls, "
          f"one image, crops made beforehand")
    print()
    print("| artifact | size (MB) | latency 1 crop (ms) | latency 9 crops (ms) | max abs diff vs Keras | "
          "max diff / R | tolerance / R | SRCC vs Keras |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, size, lat1, lat9, difference, rank, tolerance in rows:
        tol = "reference" if tolerance is None else f"{tolerance:g}" + (" ok" if difference <= tolerance * width else " EXCEEDED")
        print(f"| {label} | {size / 1e6:.1f} | {lat1:.1f} | {lat9:.1f} | {difference:.2e} | {difference / width:.1e} | "
              f"{tol} | {rank:.4f} |")
    return 0


def versions():
    import importlib.metadata

    found = []
    for name in ("tensorflow", "keras", "ai-edge-litert", "onnxruntime", "tf2onnx", "onnx"):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


if __name__ == "__main__":
    sys.exit(main())
