"""Quality maps of real photos (PNG and .npy per image), with a summary of where the low and high crops sit.

For each image the script writes `OUT/<name>.png` (the image under the heat
map of its crops' scores, a colour bar in score units, the image score in the
title) and `OUT/<name>.npy` (the grid of crop scores), with
`keras_adtrs.inference.quality_map`, and prints one row per image: the
image score on the 9-crop test grid, the map's grid, its lowest and highest
crop scores and the pixel boxes of those crops (top, left, bottom, right), so
that the pictures can be checked against what is in the photo.

The images are the files given, or the first `--count` LIVE-C dev images by
sorted file name (`Images/trainingImages/` left out). The model is
`--model` (a `.keras` file, or a `.tflite` / `.onnx` artifact). Without
`--model` a seeded random-weight model is used: its maps only show that
the pipeline works and say nothing about image quality (the script says so
in every title).

    python benchmarks/quality_maps.py --model runs/X/model.keras --output-dir maps [--count 2] [--stride 28]
        [--alpha 0.45] [IMAGE ...]
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # a script in the checkout measures the checkout's package

from keras_adtrs.console import quiet_tensorflow  # noqa: E402
from keras_adtrs.data.images import expand_paths  # noqa: E402

DEFAULT_IMAGES = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "clive_dev", "ChallengeDB_release", "Images"))
UNTRAINED = "UNTRAINED random-weight model: the map shows the pipeline, not image quality"


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", help="image files (default: the first --count LIVE-C dev images)")
    parser.add_argument("--model", default=None, help=".keras, .tflite or .onnx (default: a seeded random model)")
    parser.add_argument("--output-dir", default="maps", help="where the PNG and .npy files go (default: maps)")
    parser.add_argument("--count", type=int, default=2, help="LIVE-C images when none are given (default: 2)")
    parser.add_argument("--image-dir", default=DEFAULT_IMAGES, help="folder the default images come from")
    parser.add_argument("--stride", type=int, default=None, help="largest step between crops (default: crop / 4)")
    parser.add_argument("--alpha", type=float, default=0.45, help="opacity of the heat map (default: 0.45)")
    parser.add_argument("--crop-size", type=int, default=224, help="crop of the random model (default: 224)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random model (default: 0)")
    parser.add_argument("--dpi", type=int, default=80, help="PNG resolution (default: 80)")
    return parser




def load(args):
    """`(model, description, higher_is_better, trained)`."""
    from keras_adtrs.serving.runtimes import load_artifact, runtime_for

    if args.model is None:
        sys.path.insert(0, os.path.join(REPO, "benchmarks"))
        from deployment import random_model  # the same seeded model as the deployment benchmark

        from keras_adtrs.models.folding import folded_for_inference

        model = folded_for_inference(random_model(args.crop_size, args.seed))
        return model, f"random weights, seed {args.seed}, crop {args.crop_size}", None, False
    if runtime_for(args.model) != "keras":
        artifact = load_artifact(args.model)
        better = ((artifact.metadata or {}).get("score") or {}).get("higher_is_better")
        return artifact, args.model, better, True
    from keras_adtrs.models import load_model
    from keras_adtrs.models.folding import folded_for_inference
    from keras_adtrs.training.run_dir import RunDir

    record = RunDir.beside(args.model).read_config() or {}
    better = (record.get("data_set") or {}).get("higher_is_better")
    return folded_for_inference(load_model(args.model)), args.model, better, True


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    import keras_adtrs
    from keras_adtrs.inference.quality_map import quality_map, save_quality_map

    top = os.path.dirname(os.path.join(args.image_dir, "x"))  # its own files, not sub-folders' (LIVE-C's trainingImages)
    paths = args.images or [p for p in expand_paths([args.image_dir]) if os.path.dirname(p) == top][:args.count]
    if not paths:
        print(f"error: no images (none given, none in {args.image_dir})", file=sys.stderr)
        return 1
    model, description, better, trained = load(args)
    os.makedirs(args.output_dir, exist_ok=True)
    print(f"model: {description}" + ("" if trained else f"\n{UNTRAINED}"))
    print("| image | score (9-crop grid) | map grid | lowest crop | its box (t, l, b, r) | highest crop | its box |")
    print("|---|---:|---|---:|---|---:|---|")
    for path in paths:
        score = float(keras_adtrs.score(model, [path], crops=9)[0])
        qmap = quality_map(model, path, stride=args.stride)
        rows, cols = qmap.scores.shape
        name = os.path.splitext(os.path.basename(path))[0]
        title = (
            f"{os.path.basename(path)}: score {score:.2f} (9-crop grid)\n"
            f"map: {rows}x{cols} crops of {qmap.crop_size}, stride {qmap.stride}, mean {qmap.score:.2f}"
            + ("" if trained else f"\n{UNTRAINED}")
        )
        save_quality_map(qmap, os.path.join(args.output_dir, name + ".png"), title=title, higher_is_better=better,
                         alpha=args.alpha, dpi=args.dpi)

        def box(index):
            r, c = divmod(int(index), cols)
            top, left = int(qmap.tops[r]), int(qmap.lefts[c])
            return f"({top}, {left}, {top + qmap.crop_size}, {left + qmap.crop_size})"

        low, high = qmap.scores.argmin(), qmap.scores.argmax()
        print(f"| {os.path.basename(path)} | {score:.2f} | {rows}x{cols}, stride {qmap.stride} | "
              f"{qmap.scores.flat[low]:.2f} | {box(low)} | {qmap.scores.flat[high]:.2f} | {box(high)} |")
    print(f"maps in {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
