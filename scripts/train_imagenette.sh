#!/usr/bin/env bash
# Train the project's Imagenette models (docs/models.md): a standard and an L2-robust small ResNet at 64 px,
# same architecture, data, schedule and seed; then copy their weights to models/.
#
#   scripts/train_imagenette.sh [standard|robust|both] [RUNS_DIR]
#
# DATA (default ../shared/data/imagenette128) and THREADS (default 1 per run) can be set in the environment;
# ROBUSTLENS overrides the command (default: robustlens). Each run resumes if interrupted (--resume).
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-both}
runs=${2:-runs/imagenette}
data=${DATA:-../shared/data/imagenette128}
threads=${THREADS:-1}
rl=${ROBUSTLENS:-robustlens}

common=(--model imagenette_resnet --weights none --seed 0 --data "folder:$data/train" --val-data "folder:$data/val"
        --epochs 12 --batch-size 128 --lr 0.1 --schedule onecycle --warmup 0.2 --weight-decay 5e-4
        --crop-padding 4 --flip --workers 1 --threads "$threads" --resume --no-progress --json)

train_one() {  # name, extra args...
  local name=$1; shift
  $rl train "${common[@]}" "$@" --out "$runs/$name"
  mkdir -p models
  cp "$runs/$name/model.safetensors" "src/robustlens/models/weights/imagenette_resnet_$name.safetensors"
  cp "$runs/$name/model.json" "src/robustlens/models/weights/imagenette_resnet_$name.json"
}

if [[ $which == standard || $which == both ]]; then
  train_one standard --method standard --val-robust 200 --norm l2 --eps 1.0
fi
if [[ $which == robust || $which == both ]]; then
  train_one robust --method fast --norm l2 --eps 1.0 --eps-ramp 0.2 --val-robust 200
fi
