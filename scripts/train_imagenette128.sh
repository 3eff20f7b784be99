#!/usr/bin/env bash
# Train the 128 px Imagenette pair (docs/models.md): a standard and an L2-robust ResNet (widths 24-48-96-192),
# same architecture, data, schedule and seed, by progressive resizing: stage 1 at 64 px (ε scaled by the side,
# 0.75), stage 2 at 128 px (ε 1.5) from stage 1's weights. Then copies the weights into the package.
#
#   scripts/train_imagenette128.sh [standard|robust|both] [RUNS_DIR]
#
# PROFILE=cpu (default: the 2-core CPU recipe, about 50 min for both side by side with one thread each) or
# PROFILE=gpu (longer schedule for a GPU: same commands, more epochs; --device cuda).
# DATA (default ../shared/data/imagenette128), THREADS (default 1 per run), ROBUSTLENS (default: robustlens)
# can be set in the environment. Each stage resumes if interrupted (--resume).
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-both}
runs=${2:-runs/imagenette128}
data=${DATA:-../shared/data/imagenette128}
threads=${THREADS:-1}
rl=${ROBUSTLENS:-robustlens}
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-1073741824} MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-1073741824}
case ${PROFILE:-cpu} in
  cpu) epochs1=16 epochs2=4 device=cpu ;;
  gpu) epochs1=30 epochs2=30 device=cuda ;;
  *) echo "PROFILE must be cpu or gpu" >&2; exit 2 ;;
esac

common=(--model imagenette128_resnet --seed 0 --data "folder:$data/train" --val-data "folder:$data/val"
        --batch-size 128 --weight-decay 5e-4 --flip --workers 1 --threads "$threads" --device "$device"
        --val-robust 200 --norm l2 --resume --no-progress --json)

train_one() {  # name, method args...
  local name=$1; shift
  $rl train "${common[@]}" "$@" --weights none --input-size 64 --crop-padding 4 --epochs "$epochs1" \
      --lr 0.1 --schedule onecycle --warmup 0.2 --eps-ramp 0.2 --eps 0.75 --out "$runs/$name-64" > "$runs/$name-64.json"
  $rl train "${common[@]}" "$@" --weights "$runs/$name-64/model.safetensors" --crop-padding 8 --epochs "$epochs2" \
      --lr 0.02 --schedule cosine --eps 1.5 --out "$runs/$name" > "$runs/$name.json"
  cp "$runs/$name/model.safetensors" "src/robustlens/models/weights/imagenette128_resnet_$name.safetensors"
  cp "$runs/$name/model.json" "src/robustlens/models/weights/imagenette128_resnet_$name.json"
}

mkdir -p "$runs"
pids=()
if [[ $which == standard || $which == both ]]; then train_one standard --method standard & pids+=($!); fi
if [[ $which == robust || $which == both ]]; then train_one robust --method fast & pids+=($!); fi
for p in "${pids[@]}"; do wait "$p"; done
