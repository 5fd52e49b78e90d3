"""The ADTRS ablation on real photos, with and without quality-aware pre-training (prints a table).

Six rows, each `python -m keras_adtrs.train --dataset live_challenge --splits N`
on the LIVE-C release at `--manual-dir` (by default the 200-image dev subset
in ../shared/data/clive_dev), the same recipe except the initialisation and
the objective's terms:

1. random init, quality terms only
2. random init, full ADTRS (quality, relative ranking, self-consistency)
3. pre-trained, quality terms only
4. pre-trained, + relative ranking
5. pre-trained, + self-consistency
6. pre-trained, full ADTRS

"Pre-trained" starts from `--init-from` (a `python -m keras_adtrs.pretrain`
model.keras; its images must not include the evaluated ones). Each row's
splits use seeds `seed .. seed + N - 1` (split, crops and initialisation);
every split selects its epoch on its own validation part and is tested on
its held-out images. The table gives the median, minimum and maximum of test
SRCC and PLCC over the splits, and each row's wall time. Each row's run
folders stay under `--output-dir` (protocol.json per row).

    python benchmarks/pretraining_ablation.py --init-from runs/pretrain/model.keras \\
        [--rows 1 2 3 4 5 6] [--splits 5] [--crop-size 96] [--epochs 6] [--output-dir runs/ablation]
"""

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # a script in the checkout runs the checkout's package

from keras_adtrs.training.run_dir import RunDir  # noqa: E402
DEFAULT_MANUAL_DIR = os.path.join(os.path.dirname(REPO), "shared", "data", "clive_dev")

QUALITY_ONLY = "consistency=0,ranking=0,ranking_consistency=0"
ROWS = {
    1: ("random init, quality terms only", False, QUALITY_ONLY),
    2: ("random init, full ADTRS", False, None),
    3: ("pre-trained, quality terms only", True, QUALITY_ONLY),
    4: ("pre-trained, + relative ranking", True, "consistency=0,ranking_consistency=0"),
    5: ("pre-trained, + self-consistency", True, "ranking=0,ranking_consistency=0"),
    6: ("pre-trained, full ADTRS", True, None),
}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init-from", help="pre-trained model.keras (rows 3-6)")
    parser.add_argument("--manual-dir", default=DEFAULT_MANUAL_DIR, help="LIVE-C release folder (default: %(default)s)")
    parser.add_argument("--rows", type=int, nargs="+", default=sorted(ROWS), choices=sorted(ROWS))
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--crops-per-image", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--output-dir", default=os.path.join("runs", "ablation"))
    parser.add_argument("--train-args", default="", help="more train options, quoted as one string")
    return parser


def run_row(row, args):
    label, pretrained, weights = ROWS[row]
    out = os.path.abspath(os.path.join(args.output_dir, f"row{row}"))
    command = [
        sys.executable, "-m", "keras_adtrs.train", "--dataset", "live_challenge", "--manual-dir", args.manual_dir,
        "--splits", str(args.splits), "--seed", str(args.seed), "--crop-size", str(args.crop_size),
        "--epochs", str(args.epochs), "--crops-per-image", str(args.crops_per_image),
        "--batch-size", str(args.batch_size), "--learning-rate", str(args.learning_rate),
        "--no-export", "--quiet", "--output-dir", out,
    ]
    command += ["--init-from", args.init_from] if pretrained else ["--backbone-weights", "none"]
    if weights:
        command += ["--loss-weights", weights]
    command += args.train_args.split()
    print(f"row {row} ({label}): {' '.join(command[1:])}", file=sys.stderr, flush=True)
    started = time.time()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.time() - started
    if result.returncode != 0:
        raise SystemExit(f"row {row} failed:\n{result.stderr[-3000:]}")
    run = RunDir(out)
    if args.splits > 1:
        with open(run.protocol_path, encoding="utf-8") as handle:
            test = json.load(handle)["test"]
    else:  # one split is a plain run: its metrics.json
        test = {name: {"median": v, "min": v, "max": v} for name, v in run.read_metrics()["test"].items()}
    return {"row": row, "label": label, "seconds": seconds, "test": test, "folder": out}


def _cell(summary):
    return f"{summary['median']:.3f} ({summary['min']:.3f}-{summary['max']:.3f})"


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.manual_dir = os.path.abspath(args.manual_dir)  # the rows run in the repository
    if args.init_from:
        args.init_from = os.path.abspath(args.init_from)
    if any(ROWS[r][1] for r in args.rows) and not args.init_from:
        raise SystemExit("error: rows 3-6 need --init-from (a pre-trained model.keras)")
    results = [run_row(row, args) for row in args.rows]
    print(f"LIVE-C at {args.manual_dir}: {args.splits} splits (seeds {args.seed}..{args.seed + args.splits - 1}), "
          f"crop {args.crop_size}, {args.epochs} epochs x {args.crops_per_image} crops/image, batch "
          f"{args.batch_size}, Adam {args.learning_rate:g} cosine; median (min-max) over the splits")
    print("| row | initialisation and objective | test SRCC | test PLCC | wall time |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['row']} | {r['label']} | {_cell(r['test']['srcc'])} | {_cell(r['test']['plcc'])} | "
              f"{r['seconds'] / 60:.1f} min |")
    with open(os.path.join(args.output_dir, "ablation.json"), "w", encoding="utf-8") as handle:
        json.dump({"args": vars(args), "rows": results}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
