#!/usr/bin/env bash
# LIVE-C training from scratch on the JAX backend, for the GPU machine (JAX + PyTorch, no TensorFlow, no network).
#
# Two stages:
#   1. here (network available):   benchmarks/gpu_clive_run.sh prepare
#      downloads the pure-Python wheels keras needs into wheels/ (a few MiB; only 64 MiB travel):
#        keras 3.15 itself, and those of its dependencies that may be missing there:
#        absl-py, rich (+ markdown-it-py, mdurl, pygments), namex, optree, ml-dtypes, h5py, packaging.
#      optree, ml-dtypes and h5py are binary wheels: they are fetched for the device's Python
#      (PYVER, default 311, manylinux x86_64) and installed only when missing there
#      (ml-dtypes ships with jax; h5py is only needed for .h5 weights; .keras files need it too).
#      Also needs there: numpy, scipy, pillow (PyTorch/JAX images normally have them).
#   2. on the device (run tool):    OUT=... benchmarks/gpu_clive_run.sh run [--smoke] [gpu_clive_run.py options]
#      installs the wheels with --no-index, then trains with KERAS_BACKEND=jax on
#      ../shared/data/clive_dev (seeded 80/20 split, 10% of train for epoch selection)
#      and writes $OUT/metrics.json (wall time, crops/s, test SRCC/PLCC).
#   CPU check here:                 benchmarks/gpu_clive_run.sh run --smoke
set -euo pipefail
cd "$(dirname "$0")/.."
stage="${1:-run}"; shift || true
WHEELS="${WHEELS:-wheels}"
PYVER="${PYVER:-311}"

case "$stage" in
prepare)
    mkdir -p "$WHEELS"
    pip download "keras==3.15.*" --no-deps -d "$WHEELS"
    pip download absl-py rich markdown-it-py mdurl pygments namex packaging --no-deps -d "$WHEELS"
    pip download optree ml-dtypes h5py --no-deps -d "$WHEELS" \
        --only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --python-version "$PYVER" --implementation cp
    du -sh "$WHEELS"
    echo "wheels ready in $WHEELS/ (git-ignored? pass it in the run tool's carry list)"
    ;;
run)
    if ! python -c "import keras" 2>/dev/null; then
        [ -d "$WHEELS" ] || { echo "no keras and no $WHEELS/: run '$0 prepare' first" >&2; exit 2; }
        # Install only what is missing, from the local wheels.
        missing=()
        for mod in keras absl rich namex optree ml_dtypes h5py; do
            python -c "import $mod" 2>/dev/null || missing+=("$mod")
        done
        echo "installing from $WHEELS/ (missing: ${missing[*]})"
        pip install --no-index --find-links "$WHEELS" "keras==3.15.*"
    fi
    pip install --no-index --no-deps -e . >/dev/null 2>&1 || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    export KERAS_BACKEND=jax
    export OUT="${OUT:-gpu_clive_out}"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
    python benchmarks/gpu_clive_run.py --out "$OUT" "$@"
    ;;
*)
    echo "usage: $0 prepare | run [--smoke] [options]" >&2; exit 2 ;;
esac
