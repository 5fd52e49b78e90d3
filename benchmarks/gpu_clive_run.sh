#!/usr/bin/env bash
# LIVE-C training from scratch on the JAX backend, for the lent GPU machine
# (JAX + PyTorch, Python 3.12, no TensorFlow, no network, 64 MiB of tree travel).
#
# Two stages:
#   1. here (package registry reachable):   bash benchmarks/gpu_clive_run.sh prepare
#      - downloads what keras needs and the device lacks into .whl/ (~3 MiB):
#        keras 3.15.1 and namex (pure Python), optree (binary, cp312 manylinux);
#        the device already has absl-py, h5py, ml-dtypes, rich, packaging, numpy,
#        scipy, pillow and jax (its image's package list, KINDS.md);
#      - copies ../shared/data/clive_dev into .devdata/ (21 MiB): ../shared does not travel.
#      Both folders are added to .git/info/exclude; pass them in the run tool's carry list.
#   2. on the device (run tool, carry [".whl", ".devdata"]):
#         bash benchmarks/gpu_clive_run.sh run [--smoke] [gpu_clive_run.py options]
#      installs the wheels with --no-index into /tmp/site, then trains with KERAS_BACKEND=jax
#      on .devdata/clive_dev (seeded 80/20 split, 10% of train for epoch selection) and
#      writes $OUT/metrics.json (wall time, crops/s, test SRCC/PLCC), $OUT/history.csv and $OUT/log.txt.
#   CPU check here (no wheels needed where keras is installed):
#         OUT=/tmp/gpu_smoke bash benchmarks/gpu_clive_run.sh run --smoke
set -euo pipefail
cd "$(dirname "$0")/.."
stage="${1:-run}"; shift || true
WHEELS="${WHEELS:-.whl}"
DATA="${DATA:-.devdata}"
PYVER="${PYVER:-3.12}"
PY="${PYTHON:-python3}"

case "$stage" in
prepare)
    mkdir -p "$WHEELS" "$DATA"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" "keras==3.15.1" namex optree
    [ -d "$DATA/clive_dev" ] || cp -r ../shared/data/clive_dev "$DATA/"
    for path in "/$WHEELS/" "/$DATA/"; do
        grep -qxF "$path" .git/info/exclude 2>/dev/null || echo "$path" >> .git/info/exclude
    done
    du -sh "$WHEELS" "$DATA"
    echo "ready: carry [\"$WHEELS\", \"$DATA\"] and run: bash benchmarks/gpu_clive_run.sh run"
    ;;
run)
    if ! "$PY" -c "import keras" 2>/dev/null; then
        [ -d "$WHEELS" ] || { echo "no keras and no $WHEELS/: run '$0 prepare' first and carry $WHEELS" >&2; exit 2; }
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site "$WHEELS"/*.whl
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    # XLA autotuner warnings ("Delay kernel timed out") go to stderr at level W: hide them unless asked.
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
    export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
    export OUT="${OUT:-gpu_clive_out}"
    mkdir -p "$OUT"
    manual_dir="$DATA/clive_dev"
    [ -d "$manual_dir" ] || manual_dir=../shared/data/clive_dev
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
    "$PY" benchmarks/gpu_clive_run.py --out "$OUT" --manual-dir "$manual_dir" "$@" 2>&1 | tee "$OUT/log.txt"
    ;;
*)
    echo "usage: $0 prepare | run [--smoke] [options]" >&2; exit 2 ;;
esac
