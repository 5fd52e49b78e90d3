#!/usr/bin/env bash
# The best LIVE-C recipe found without ImageNet weights (the K-fold search of
# benchmarks/clive_recipes.py, docs/pretraining.md), trained on every image of
# the release given, with the project's commands.
#
#   bash benchmarks/clive_pipeline.sh OUT_DIR
#
# 1. Optional (PRETRAIN_STEPS > 0): python -m keras_adtrs.pretrain on the
#    wallpaper photographs of Debian's plasma-workspace-wallpapers,
#    mate-backgrounds and ukui-wallpapers packages (/usr/share/wallpapers,
#    /usr/share/backgrounds; installed by this script with apt-get when
#    missing and run as root) and the 7 training images of the LIVE-C release
#    (Images/trainingImages, which the release does not score); no human score
#    is used. -> OUT_DIR/pretrain/model.keras. The search found that it did not
#    help, so the default skips it.
# 2. python -m keras_adtrs.train --config RECIPE --dataset live_challenge
#    --manual-dir CLIVE on every image of the release (--test-fraction 0
#    --validation-fraction 0): the recipe's epoch count is the one whose pooled
#    5-fold SRCC was best, so no handful of images picks the epoch.
#    [--init-from OUT_DIR/pretrain/model.keras] -> OUT_DIR/train/
# 3. OUT_DIR/model.keras: the trained model (a copy of train/model.keras).
#
# Environment (defaults in brackets):
#   CLIVE            LIVE-C release folder [../shared/data/clive_dev beside the repository]
#   RECIPE           recipe file [recipes/clive_probe.yaml]
#   PRETRAIN_STEPS   pre-training steps, 0 for none [0]
#   SEED             [0]
#   PYTHON           [python]
#   PHOTOS           folders of photographs to pre-train on, space-separated
#                    [/usr/share/wallpapers /usr/share/backgrounds]
#   EXTRA_PRETRAIN, EXTRA_TRAIN   further options for the two commands
# The measured wall times and scores are in docs/pretraining.md.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi
REPO="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"
CLIVE="${CLIVE:-$REPO/../shared/data/clive_dev}"
RECIPE="${RECIPE:-$REPO/recipes/clive_probe.yaml}"
PRETRAIN_STEPS="${PRETRAIN_STEPS:-0}"
SEED="${SEED:-0}"
PY="${PYTHON:-python}"
PHOTOS_SET="${PHOTOS:-}"
read -r -a PHOTOS <<< "${PHOTOS:-/usr/share/wallpapers /usr/share/backgrounds}"

if [ ! -d "$CLIVE" ]; then
    echo "error: no LIVE-C release at $CLIVE (set CLIVE=...)" >&2
    exit 2
fi
if [ ! -f "$RECIPE" ]; then
    echo "error: no recipe file at $RECIPE (set RECIPE=...)" >&2
    exit 2
fi
cd "$REPO"
started=$(date +%s)
init=()
images=()
if [ "$PRETRAIN_STEPS" != 0 ]; then
    training_images="$(find "$CLIVE" -type d -name trainingImages | head -n 1)"
    missing=0
    for folder in "${PHOTOS[@]}"; do [ -d "$folder" ] || missing=1; done
    if [ "$missing" = 1 ]; then
        if [ -z "${PHOTOS_SET:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing the wallpaper photographs (about 165 MB)" >&2
            packages=(plasma-workspace-wallpapers mate-backgrounds ukui-wallpapers)
            apt-get install -y -qq "${packages[@]}" >/dev/null 2>&1 \
                || { apt-get update -qq && apt-get install -y -qq "${packages[@]}" >/dev/null; }
        else
            echo "error: no photographs under ${PHOTOS[*]}; as root, install Debian's wallpaper photographs:" >&2
            echo "  apt-get install plasma-workspace-wallpapers mate-backgrounds ukui-wallpapers" >&2
            exit 2
        fi
    fi
    images=("${PHOTOS[@]}")
    [ -n "$training_images" ] && images+=("$training_images")
    echo "[pre-training] on ${images[*]} ($PRETRAIN_STEPS steps)" >&2
    # shellcheck disable=SC2086
    "$PY" -m keras_adtrs.pretrain --images "${images[@]}" --steps "$PRETRAIN_STEPS" \
        --seed "$SEED" --output-dir "$OUT/pretrain" ${EXTRA_PRETRAIN:-}
    init=(--init-from "$OUT/pretrain/model.keras")
fi
pretrained=$(date +%s)
echo "[training] $RECIPE on every image of $CLIVE" >&2
# shellcheck disable=SC2086
"$PY" -m keras_adtrs.train --config "$RECIPE" --dataset live_challenge --manual-dir "$CLIVE" \
    "${init[@]}" --test-fraction 0 --validation-fraction 0 --seed "$SEED" --no-export \
    --output-dir "$OUT/train" ${EXTRA_TRAIN:-}
finished=$(date +%s)
cp "$OUT/train/model.keras" "$OUT/model.keras"
cat > "$OUT/pipeline.json" <<JSON
{"pretrain_seconds": $((pretrained - started)), "train_seconds": $((finished - pretrained)),
 "total_seconds": $((finished - started)), "pretrain_steps": $PRETRAIN_STEPS, "recipe": "$RECIPE",
 "seed": $SEED, "clive": "$CLIVE", "pretrain_images": "${images[*]}"}
JSON
echo "done in $(( (finished - started) / 60 )) min: $OUT/model.keras" >&2
