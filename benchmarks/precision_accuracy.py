"""What bfloat16 costs in accuracy against float32 (prints two tables): the measurements behind `--precision auto`.

1. **Agreement**: the same model's scores in float32 and in bfloat16 (same
   weights, `keras_adtrs.models.with_precision`) on the LIVE-C dev images
   (`--manual-dir`, default ../shared/data/clive_dev): the SRCC and the largest
   difference between the two, and each one's SRCC with the human scores.
   `--model` is a trained `.keras` file (for instance a LIVE-C run's);
   without it the default run's model of step 2 (seed 0, float32) is used.
2. **Training**: the default run (`python -m keras_adtrs.train`, no other
   option) with seeds `--seeds` in float32 and in mixed_bfloat16, one run at a
   time: each run's test SRCC and PLCC, training crops per second and wall
   time, and the median per precision. With `--reuse`, a run whose folder
already holds its `metrics.json` is read instead of run again (runs done
one at a time, or a command interrupted).

Each run's folder stays under `--output-dir`; `precision_accuracy.json` there
keeps both tables. bfloat16 rows need a CPU with AVX512-BF16 or AMX (or a
recent GPU); elsewhere they are skipped with the reason.

    python benchmarks/precision_accuracy.py [--seeds 0 1 2] [--model M] [--skip-training] [--reuse] [--output-dir runs/precision]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MANUAL_DIR = os.path.join(os.path.dirname(REPO), "shared", "data", "clive_dev")
PRECISIONS = ("float32", "mixed_bfloat16")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default=None, help="a trained .keras model for the agreement table")
    parser.add_argument("--manual-dir", default=DEFAULT_MANUAL_DIR, help="LIVE-C release (default: %(default)s)")
    parser.add_argument("--skip-training", action="store_true", help="the agreement table only (needs --model)")
    parser.add_argument("--train-args", default="", help="further options of every training run (tests: tiny runs)")
    parser.add_argument("--output-dir", default="runs/precision")
    parser.add_argument("--reuse", action="store_true",
                        help="read the runs already finished under --output-dir instead of running them again")
    return parser


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}


def training_runs(args, out):
    rows = []
    for precision in PRECISIONS:
        for seed in args.seeds:
            folder = os.path.join(out, f"default-{precision}-seed{seed}")
            if args.reuse and os.path.exists(os.path.join(folder, "metrics.json")):
                rows.append(_row(precision, seed, folder))  # finished before: read, not run again
                continue
            cmd = [sys.executable, "-m", "keras_adtrs.train", "--seed", str(seed), "--precision", precision,
                   "--no-export", "--quiet", "--output-dir", folder, *args.train_args.split()]
            result = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True)
            if result.returncode != 0:
                rows.append({"precision": precision, "seed": seed, "error": result.stderr.strip().splitlines()[-1]})
                if "needs" in result.stderr:  # the machine lacks the precision: no other seed will run either
                    break
                continue
            rows.append(_row(precision, seed, folder))
    return rows


def _row(precision, seed, folder):
    with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    return {"precision": precision, "seed": seed, "test_srcc": metrics["test"]["srcc"],
            "test_plcc": metrics["test"]["plcc"], "best_epoch": metrics["best_epoch"],
            "train_crops_per_second": metrics["train_crops_per_second"],
            "wall_seconds": metrics["wall_seconds"], "model": metrics.get("model")}


AGREEMENT = """
import json, sys
import numpy as np
from scipy import stats
import keras_adtrs
from keras_adtrs.data.live_challenge import load_live_challenge
from keras_adtrs.models import with_precision
from keras_adtrs.models.precision import precision_support

model = keras_adtrs.load_model(sys.argv[1])
source = load_live_challenge(sys.argv[2])
out = {"model": sys.argv[1], "images": len(source), "model_precision": model.precision}
scores = {}
for precision in ("float32", "mixed_bfloat16"):
    ok, device = precision_support(precision)
    if not ok:
        out[precision] = f"skipped: this machine has {device}"
        continue
    scores[precision] = keras_adtrs.score(with_precision(model, precision), source.images)
    out[precision + "_srcc_with_mos"] = float(stats.spearmanr(scores[precision], source.scores)[0])
if len(scores) == 2:
    a, b = scores["float32"], scores["mixed_bfloat16"]
    out["srcc_bfloat16_float32"] = float(stats.spearmanr(a, b)[0])
    out["max_abs_difference"] = float(np.abs(a - b).max())
    out["score_range"] = float(np.ptp(a))
print(json.dumps(out))
"""


def agreement(model, manual_dir):
    result = subprocess.run([sys.executable, "-c", AGREEMENT, model, manual_dir], cwd=REPO, env=_env(),
                            capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.skip_training and not args.model:
        build_parser().error("--skip-training needs --model")
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)
    runs = [] if args.skip_training else training_runs(args, out)
    model = args.model or next((r["model"] for r in runs if r.get("precision") == "float32" and "model" in r), None)
    agree = agreement(model, args.manual_dir) if model else {"error": "no model"}
    json.dump({"runs": runs, "agreement": agree}, open(os.path.join(out, "precision_accuracy.json"), "w"), indent=2)
    print(f"agreement on {args.manual_dir}: model {model}")
    for key in ("images", "srcc_bfloat16_float32", "max_abs_difference", "score_range", "float32_srcc_with_mos",
                "mixed_bfloat16_srcc_with_mos", "error"):
        if key in agree:
            print(f"  {key}: {agree[key]}")
    if runs:
        print("| precision | seed | test SRCC | test PLCC | best epoch | train crops/s | wall s |")
        print("|---|---|---|---|---|---|---|")
        for r in runs:
            if "error" in r:
                print(f"| {r['precision']} | {r['seed']} | {r['error']} | | | | |")
            else:
                print(f"| {r['precision']} | {r['seed']} | {r['test_srcc']:.3f} | {r['test_plcc']:.3f} | "
                      f"{r['best_epoch']} | {r['train_crops_per_second']} | {r['wall_seconds']:.0f} |")
        for precision in PRECISIONS:
            values = [r["test_srcc"] for r in runs if r["precision"] == precision and "test_srcc" in r]
            if values:
                print(f"median test SRCC, {precision}: {statistics.median(values):.3f} over {len(values)} seed(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
