"""The LIVE-C recipe search: K-fold pooled SRCC of each recipe and of classical yardsticks (prints a table).

Every row is `python -m keras_adtrs.train --config recipes/<row>.yaml
--dataset live_challenge --folds K --no-final-model` on the LIVE-C release at
`--manual-dir` (by default the 200-image dev subset in
../shared/data/clive_dev), with the same seed, so every row meets the same
folds. Rows marked "pre-trained" start from `--init-from` (a
`python -m keras_adtrs.pretrain` model.keras whose images do not include the
evaluated ones). The yardsticks (NIQE fitted on `--pristine` photographs,
BRISQUE fitted on each fold's training labels) are scored on the same folds
by `python -m keras_adtrs.evaluate --baseline`.

The table gives, per row, the pooled out-of-fold SRCC with its bootstrap
95 % interval, the pooled PLCC, the median and range of the per-fold SRCC,
the epoch whose pooled SRCC was best, and the CPU minutes of the row (user
and system time of its processes; wall minutes beside). Each row's run
folders stay under `--output-dir`; `recipes.json` collects the table.

    python benchmarks/clive_recipes.py --init-from runs/pretrain/model.keras --pristine /usr/share/wallpapers \\
        [--rows crop64 crop96 ...] [--folds 5] [--output-dir runs/recipes]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(REPO, "recipes")
DEFAULT_MANUAL_DIR = os.path.join(os.path.dirname(REPO), "shared", "data", "clive_dev")

#: Row name -> (description, recipe file under recipes/, needs --init-from, further train options).
ROWS = {
    "crop64": ("random init, crop 64, fine-tuning", "clive_random.yaml", False, ["--crop-size", "64"]),
    "crop96": ("random init, crop 96, fine-tuning", "clive_random.yaml", False, ["--crop-size", "96"]),
    "crop128": ("random init, crop 128, fine-tuning", "clive_random.yaml", False, ["--crop-size", "128"]),
    "probe": ("random init, linear probe only", "clive_probe.yaml", False, []),
    "pretrained_ft": ("pre-trained, plain fine-tuning", "clive_pretrained_ft.yaml", True, []),
    "pretrained_lpft": ("pre-trained, LP-FT (ratio 0.1, frozen BatchNorm)", "clive_lpft.yaml", True, []),
    "lpft_quality": ("pre-trained, LP-FT, quality terms only", "clive_lpft.yaml", True,
                     ["--loss-weights", "consistency=0,ranking=0,ranking_consistency=0"]),
    "lpft_crops25": ("pre-trained, LP-FT, 25 test crops", "clive_lpft.yaml", True, ["--test-crops", "25"]),
}
BASELINE_ROWS = ("niqe", "brisque")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS) + list(BASELINE_ROWS),
                        choices=list(ROWS) + list(BASELINE_ROWS))
    parser.add_argument("--init-from", help="pre-trained model.keras (the pre-trained rows)")
    parser.add_argument("--pristine", nargs="+", default=["/usr/share/wallpapers", "/usr/share/backgrounds"],
                        help="photographs to fit NIQE's pristine model on (default: %(default)s)")
    parser.add_argument("--manual-dir", default=DEFAULT_MANUAL_DIR, help="LIVE-C release folder (default: %(default)s)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="runs/recipes")
    parser.add_argument("--data-dir", help="where the LIVE-C set is prepared (default: OUTPUT_DIR/tensorflow_datasets, "
                                           "so that a set prepared elsewhere from other files never collides)")
    parser.add_argument("--train-args", default="", help="further options for every row's train command")
    return parser


def _run(cmd, log_path):
    """Runs a command; returns (exit status, wall seconds, CPU seconds of it and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    with open(log_path, "w") as log:
        status = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return status, time.time() - started, cpu


def _fmt(value, digits=3):
    return "" if value is None else f"{value:.{digits}f}"


def train_row(name, args, out):
    description, recipe, pretrained, extra = ROWS[name]
    folder = os.path.join(out, name)
    cmd = [sys.executable, "-m", "keras_adtrs.train", "--config", os.path.join(RECIPES, recipe),
           "--dataset", "live_challenge", "--manual-dir", args.manual_dir, "--data-dir", args.data_dir,
           "--folds", str(args.folds),
           "--seed", str(args.seed), "--no-final-model", "--no-export", "--quiet", "--output-dir", folder,
           *extra, *args.train_args.split()]
    if pretrained:
        cmd += ["--init-from", args.init_from]
    status, wall, cpu = _run(cmd, folder + ".log")
    if status != 0:
        return {"row": name, "description": description, "error": f"exit status {status}: see {folder}.log"}
    record = json.load(open(os.path.join(folder, "folds.json")))
    pooled = record["pooled"]
    per_fold = [r["test"].get("srcc") for r in record["per_fold"]]
    best = max(record["pooled_srcc_by_epoch"], key=lambda r: r["srcc"]) if record["pooled_srcc_by_epoch"] else {}
    return {"row": name, "description": description, "recipe": f"recipes/{recipe}", "options": extra,
            "srcc": pooled["srcc"]["value"], "srcc_ci": [pooled["srcc"]["ci_low"], pooled["srcc"]["ci_high"]],
            "plcc": pooled["plcc"]["value"], "fold_srcc": per_fold, "best_epoch": best.get("epoch"),
            "best_epoch_srcc": best.get("srcc"), "cpu_minutes": cpu / 60, "wall_minutes": wall / 60,
            "folder": folder}


def baseline_rows(names, args, out, reference):
    """NIQE and BRISQUE on the folds of the finished row `reference` (its folder)."""
    folder = os.path.join(out, "baselines")
    cmd = [sys.executable, "-m", "keras_adtrs.evaluate", "--model", reference, "--baseline", *names,
           "--output-dir", folder, "--no-progress"]
    if "niqe" in names:
        cmd += ["--pristine", *args.pristine]
    status, wall, cpu = _run(cmd, folder + ".log")
    if status != 0:
        return [{"row": n, "description": n, "error": f"exit status {status}: see {folder}.log"} for n in names]
    result = json.load(open(os.path.join(folder, "evaluation.json")))
    rows = []
    for name in names:
        entry = result["baselines"][name]
        rows.append({"row": name, "description": entry["how"], "srcc": entry["srcc"]["value"],
                     "srcc_ci": [entry["srcc"]["ci_low"], entry["srcc"]["ci_high"]], "plcc": entry["plcc"]["value"],
                     "fold_srcc": [], "best_epoch": None, "cpu_minutes": cpu / 60 / len(names),
                     "wall_minutes": wall / 60 / len(names)})
    return rows


def main(argv=None):
    args = build_parser().parse_args(argv)
    if any(ROWS[r][2] for r in args.rows if r in ROWS) and not args.init_from:
        build_parser().error("the pre-trained rows need --init-from")
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)
    args.data_dir = args.data_dir or os.path.join(out, "tensorflow_datasets")
    rows = []
    for name in args.rows:
        if name in ROWS:
            rows.append(train_row(name, args, out))
            print(f"{name}: " + (rows[-1].get("error") or f"SRCC {rows[-1]['srcc']:.3f}"), file=sys.stderr, flush=True)
    wanted = [n for n in args.rows if n in BASELINE_ROWS]
    if wanted:
        reference = next((r["folder"] for r in rows if "folder" in r), None)
        if reference is None:
            build_parser().error("the baselines need a finished training row in the same run (its folds)")
        rows += baseline_rows(wanted, args, out, reference)
    json.dump({"folds": args.folds, "seed": args.seed, "manual_dir": args.manual_dir, "rows": rows},
              open(os.path.join(out, "recipes.json"), "w"), indent=2)
    print(f"{args.folds}-fold pooled out-of-fold metrics on {args.manual_dir} (seed {args.seed})")
    print("| row | recipe | pooled SRCC [95% CI] | pooled PLCC | per-fold SRCC median (min-max) | best epoch | CPU min | wall min |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['row']} | {r['description']} | {r['error']} | | | | | |")
            continue
        folds = sorted(v for v in r["fold_srcc"] if v is not None)
        spread = f"{folds[len(folds) // 2]:.3f} ({folds[0]:.3f}-{folds[-1]:.3f})" if folds else ""
        print(f"| {r['row']} | {r['description']} | {r['srcc']:.3f} [{_fmt(r['srcc_ci'][0])}, {_fmt(r['srcc_ci'][1])}] "
              f"| {r['plcc']:.3f} | {spread} | {r['best_epoch'] or ''} | {r['cpu_minutes']:.1f} | {r['wall_minutes']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
