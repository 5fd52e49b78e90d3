#!/usr/bin/env bash
# The CPU recipe for LIVE-C without ImageNet weights: quality-aware pre-training
# on free photographs, then fine-tuning on the LIVE-C images with their scores.
#
#   bash benchmarks/clive_pipeline.sh OUT_DIR
#
# 1. python -m keras_adtrs.pretrain on the wallpaper photographs of Debian's
#    plasma-workspace-wallpapers, mate-backgrounds and ukui-wallpapers packages
#    (/usr/share/wallpapers, /usr/share/backgrounds; installed by this script
#    with apt-get when missing and run as root) and the 7 training images of the
#    LIVE-C release (Images/trainingImages, which the release does not score);
#    no human score is used. -> OUT_DIR/pretrain/model.keras
# 2. python -m keras_adtrs.train --dataset live_challenge --manual-dir CLIVE
#    --init-from OUT_DIR/pretrain/model.keras on every image of the release
#    (--test-fraction 0; a seeded tenth selects the epoch). -> OUT_DIR/train/
# 3. OUT_DIR/model.keras: the fine-tuned model (a copy of train/model.keras).
#
# Environment (defaults in brackets):
#   CLIVE            LIVE-C release folder [../shared/data/clive_dev beside the repository]
#   PRETRAIN_STEPS   pre-training steps [1500]
#   EPOCHS           fine-tuning epochs [12]
#   WARMUP           first fine-tuning epochs on the quality terms only, then full ADTRS [6]
#   CROP             crop side for both steps [64]
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
PRETRAIN_STEPS="${PRETRAIN_STEPS:-1500}"
EPOCHS="${EPOCHS:-12}"
WARMUP="${WARMUP:-6}"
CROP="${CROP:-64}"
SEED="${SEED:-0}"
PY="${PYTHON:-python}"
PHOTOS_SET="${PHOTOS:-}"
read -r -a PHOTOS <<< "${PHOTOS:-/usr/share/wallpapers /usr/share/backgrounds}"

if [ ! -d "$CLIVE" ]; then
    echo "error: no LIVE-C release at $CLIVE (set CLIVE=...)" >&2
    exit 2
fi
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

cd "$REPO"
started=$(date +%s)
echo "[1/2] pre-training on ${images[*]} ($PRETRAIN_STEPS steps, crop $CROP)" >&2
# shellcheck disable=SC2086
"$PY" -m keras_adtrs.pretrain --images "${images[@]}" --crop-size "$CROP" --steps "$PRETRAIN_STEPS" \
    --seed "$SEED" --output-dir "$OUT/pretrain" ${EXTRA_PRETRAIN:-}
pretrained=$(date +%s)
echo "[2/2] fine-tuning on LIVE-C at $CLIVE ($EPOCHS epochs, crop $CROP)" >&2
# shellcheck disable=SC2086
"$PY" -m keras_adtrs.train --dataset live_challenge --manual-dir "$CLIVE" \
    --init-from "$OUT/pretrain/model.keras" --test-fraction 0 --crop-size "$CROP" --epochs "$EPOCHS" \
    --crops-per-image 4 --learning-rate 3e-4 --warmup-epochs "$WARMUP" --seed "$SEED" --no-export \
    --output-dir "$OUT/train" ${EXTRA_TRAIN:-}
finished=$(date +%s)
cp "$OUT/train/model.keras" "$OUT/model.keras"
cat > "$OUT/pipeline.json" <<EOF
{"pretrain_seconds": $((pretrained - started)), "train_seconds": $((finished - pretrained)),
 "total_seconds": $((finished - started)), "pretrain_steps": $PRETRAIN_STEPS, "epochs": $EPOCHS,
 "crop_size": $CROP, "seed": $SEED, "clive": "$CLIVE", "images": "${images[*]}"}
EOF
echo "done in $(( (finished - started) / 60 )) min: $OUT/model.keras (pre-training $(( (pretrained - started) / 60 )) min, fine-tuning $(( (finished - pretrained) / 60 )) min)" >&2
