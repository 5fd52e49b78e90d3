"""Batch scoring at scale: the predict command against the Beam pipeline on 1 and 2 workers (prints a table).

The same images (`--images` files: the photos under `--source`, by default
the 200 LIVE-C dev images, repeated under other names as hard links) are
scored three ways, one after the other, each in its own process:

1. `python -m keras_adtrs.predict FOLDER --model M --format csv` (one process);
2. `python -m keras_adtrs.predict --engine beam FOLDER --model M --output ...`
   on the DirectRunner with 1 worker process;
3. the same with 2 worker processes (`--direct_num_workers=2`).

Each row gives images per second (wall time of the whole command, model
loading and the workers' start included), crops per second, and the share
of TensorFlow's float32 matrix-multiply ceiling those crops use (forward
passes of the crop size, ResNet50's 8.2 GFLOP at 224 scaled by area).
Without `--model` a crop-224 model with random weights (and a random score
layer, so that scores differ) is built and saved in `--output-dir`.
`scale.json` there keeps the table.

    python benchmarks/scale.py [--images 2000] [--crop-size 224] [--workers 1 2] [--output-dir runs/scale]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
sys.path.insert(1, REPO)  # a script in the checkout runs the checkout's package

from throughput import FORWARD_GFLOP_224  # noqa: E402

from keras_adtrs.data.images import expand_paths  # noqa: E402

DEFAULT_SOURCE = os.path.join(os.path.dirname(REPO), "shared", "data", "clive_dev", "ChallengeDB_release", "Images")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="images to score (default: %(default)s)")
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="folder of photos to repeat (default: %(default)s)")
    parser.add_argument("--model", default=None, help=".keras model (default: a random crop-224 model)")
    parser.add_argument("--crop-size", type=int, default=224, help="crop of the random model (default: %(default)s)")
    parser.add_argument("--crops", type=int, default=9, help="grid crops per image (default: %(default)s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Beam worker counts (default: 1 2)")
    parser.add_argument("--output-dir", default="runs/scale")
    return parser


def _ceiling():
    """The float32 matrix-multiply ceiling in GFLOP/s, measured in a subprocess as benchmarks/throughput.py does."""
    code = ("import sys; sys.path.insert(0, %r); from throughput import ceiling_child; ceiling_child()"
            % os.path.join(REPO, "benchmarks"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["float32"]


def make_images(source, count, folder):
    """`count` hard links (copies across file systems) of the photos under `source`, named `image-NNNNN.ext`."""
    import shutil

    photos = [p for p in expand_paths([source]) if os.path.isfile(p)]
    if not photos:
        raise SystemExit(f"error: no photos under {source}")
    os.makedirs(folder, exist_ok=True)
    for k in range(count):
        photo = photos[k % len(photos)]
        target = os.path.join(folder, f"image-{k:05d}{os.path.splitext(photo)[1].lower()}")
        if os.path.exists(target):
            continue
        try:
            os.link(photo, target)
        except OSError:
            shutil.copyfile(photo, target)
    return folder


def random_model(path, crop_size):
    code = (
        "import numpy as np, keras_adtrs\n"
        f"m = keras_adtrs.build_adtrs(crop_size={crop_size}, backbone_weights=None, score_scale=10.0, score_offset=50.0)\n"
        "k = m.network.get_layer('score_dense').kernel\n"
        "k.assign(np.random.default_rng(0).normal(0.0, 0.01, k.shape).astype('float32'))\n"
        f"m.save({path!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO})
    return path


def _timed(cmd):
    started = time.time()
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO})
    if result.returncode not in (0, 1):
        raise SystemExit(f"error: {' '.join(cmd[:4])} ... failed:\n{result.stderr[-3000:]}")
    return time.time() - started, result


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)
    folder = make_images(args.source, args.images, os.path.join(out, f"images-{args.images}"))
    model = args.model or random_model(os.path.join(out, f"random-{args.crop_size}.keras"), args.crop_size)
    import zipfile

    with zipfile.ZipFile(model) as archive:
        config = json.loads(archive.read("config.json"))["config"]
    backbone = config.get("backbone")
    crop = backbone["config"]["crop_size"] if isinstance(backbone, dict) else config["crop_size"]
    ceiling = _ceiling()
    gflop = FORWARD_GFLOP_224 * (crop / 224) ** 2
    rows = []
    predict = [sys.executable, "-m", "keras_adtrs.predict", folder, "--model", model, "--crops", str(args.crops),
               "--no-progress"]
    wall, result = _timed([*predict, "--format", "csv"])
    rows.append({"path": "predict command", "images": result.stdout.count("\n") - 1, "wall_seconds": wall})
    for workers in args.workers:
        prefix = os.path.join(out, f"beam-{workers}", "scores")
        if os.path.isdir(os.path.dirname(prefix)):
            for name in os.listdir(os.path.dirname(prefix)):
                os.remove(os.path.join(os.path.dirname(prefix), name))
        wall, result = _timed([*predict, "--engine", "beam", "--output", prefix, f"--direct_num_workers={workers}",
                               "--direct_running_mode=multi_processing"])
        scored = int(re.search(r"scored (\d+) image", result.stdout).group(1))
        rows.append({"path": f"beam, {workers} worker{'s' if workers > 1 else ''}", "images": scored,
                     "wall_seconds": wall})
    for row in rows:
        row["images_per_second"] = row["images"] / row["wall_seconds"]
        row["crops_per_second"] = row["images_per_second"] * args.crops
        row["share_of_ceiling"] = row["crops_per_second"] * gflop / ceiling
    json.dump({"images": args.images, "crops": args.crops, "crop_size": crop, "model": model, "ceiling_gflops": ceiling,
               "rows": rows}, open(os.path.join(out, "scale.json"), "w"), indent=2)
    print(f"matmul ceiling (TensorFlow float32, 2048^3): {ceiling:.0f} GFLOP/s; crop {crop}: {gflop:.2f} GFLOP/forward")
    print(f"{args.images} images x {args.crops} crops, model {os.path.basename(model)}, {os.cpu_count()} cores")
    print("| path | images/s | crops/s | of ceiling | wall s |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['path']} | {row['images_per_second']:.3f} | {row['crops_per_second']:.2f} | "
              f"{row['share_of_ceiling']:.0%} | {row['wall_seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
