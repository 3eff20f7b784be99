#!/usr/bin/env bash
# The robust pair's long run (docs/models.md, "The long run"): an L2-robust and a standard Imagenette model at
# 128 px, trained in stages, each stage a complete `robustlens train` run (its own learning-rate cycle) that
# starts from the previous stage's weights, so every stage ends with a finished model the judge can look at.
# Resumable across sessions and machines: every epoch's checkpoint is also kept, compact (float16 weights,
# bfloat16 momentum), under snapshots/ (committed), and a stage whose runs/ folder is gone resumes from there.
#
#   scripts/train_pair.sh robust|standard STAGE...     e.g. scripts/train_pair.sh robust 1 2 3 (or 2e3)
#   scripts/train_pair.sh status                       what each stage has done (epochs, hours, metrics)
#
# PROFILE=cpu (default; bf16 autocast where the CPU has it) or PROFILE=gpu (--device cuda, same stages).
# THREADS (default 1), DATA (default ../shared/data/imagenette128), ROBUSTLENS (default robustlens).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA:-../shared/data/imagenette128}
threads=${THREADS:-1}
rl=${ROBUSTLENS:-robustlens}
arch=${ARCH:-imagenette128_resnet18_32}
runs=runs/pair
snaps=snapshots/pair
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-1073741824} MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-1073741824}
case ${PROFILE:-cpu} in
  cpu) device=cpu ;;
  gpu) device=cuda ;;
  *) echo "PROFILE must be cpu or gpu" >&2; exit 2 ;;
esac

# stage -> "epochs lr schedule eps from ema": stage 1 from random init (one-cycle), later stages from the stage
# named in "from" (cosine); ema: the weight average's decay (0: none). A stage name need not be a number: the
# branches 2e3 (training ε 3.0) and 2ema (a weight average) start from stage 2, to see what each buys the judge;
# 3e3 continues 2e3 (ε 3.0, with the weight average) with the rest of the robust budget
stage_plan() {  # kind stage
  case "$1:$2" in
    robust:1) echo "16 0.1 onecycle 1.5 - 0" ;;
    robust:2) echo "32 0.05 cosine 1.5 1 0" ;;
    robust:3) echo "64 0.05 cosine 1.5 2 0" ;;
    robust:4) echo "96 0.03 cosine 1.5 3 0" ;;
    robust:2e3) echo "8 0.02 cosine 3.0 2 0" ;;
    robust:2ema) echo "8 0.02 cosine 1.5 2 0.995" ;;
    robust:3e3) echo "32 0.03 cosine 3.0 2e3 0.995" ;;
    standard:1) echo "40 0.1 onecycle 1.5 - 0" ;;
    standard:2) echo "40 0.03 cosine 1.5 1 0" ;;
    *) echo "no stage $2 for $1" >&2; return 2 ;;
  esac
}

final_weights() {  # kind stage -> the committed float16 copy of that stage's final weights
  echo "$snaps/$1-s$2-final.safetensors"
}

run_stage() {  # kind stage
  local kind=$1 stage=$2 epochs lr schedule eps from ema start method
  read -r epochs lr schedule eps from ema < <(stage_plan "$kind" "$stage")
  method=(--method fast --eps "$eps")
  [[ $kind == standard ]] && method=(--method standard --eps "$eps")
  if [[ -f $(final_weights "$kind" "$stage") ]]; then echo "$kind stage $stage: done"; return 0; fi
  start=none
  if [[ $from != - ]]; then
    start=$(final_weights "$kind" "$from")
    [[ -f $start ]] || { echo "$kind stage $stage needs stage $from first ($start)" >&2; return 2; }
  fi
  local extra=()
  [[ $schedule == onecycle ]] && extra=(--warmup 0.2)
  [[ $kind == robust && $from == - ]] && extra+=(--eps-ramp 0.2)
  [[ $ema != 0 ]] && extra+=(--ema "$ema")
  mkdir -p "$runs" "$snaps"
  $rl train --model "$arch" --weights "$start" --seed 0 --data "folder:$data/train" --val-data "folder:$data/val" \
      --val-limit 1000 --val-robust 200 --norm l2 "${method[@]}" --epochs "$epochs" --batch-size 128 --lr "$lr" \
      --schedule "$schedule" "${extra[@]}" --weight-decay 5e-4 --crop-padding 8 --flip --threads "$threads" \
      --device "$device" --resume --snapshot "$snaps/$kind-s$stage.safetensors" --no-progress --json \
      --out "$runs/$kind-s$stage" > "$runs/$kind-s$stage.json"
  python - "$runs/$kind-s$stage/model.safetensors" "$(final_weights "$kind" "$stage")" <<'EOF'
import sys

from safetensors.torch import load_file

from robustlens.models.checkpoints import read_metadata, save_weights

state = load_file(sys.argv[1])
save_weights({k: v.half() if v.is_floating_point() and not k.endswith(("running_mean", "running_var")) else v
              for k, v in state.items()}, sys.argv[2], {**read_metadata(sys.argv[1]), "stored_as": "float16"})
EOF
  rm -f "$snaps/$kind-s$stage.safetensors" "$snaps/$kind-s$stage.json"  # the rolling snapshot is done
  echo "$kind stage $stage: finished -> $(final_weights "$kind" "$stage")"
}

if [[ ${1:-} == status ]]; then
  for f in "$snaps"/*.metrics.jsonl "$runs"/*/metrics.jsonl; do
    [[ -f $f ]] || continue
    tail -n 1 "$f" | python -c "import json,sys; r=json.loads(sys.stdin.read()); print('$f', {k: r.get(k) for k in ('epoch','seconds_total','val_accuracy','val_robust_accuracy')})"
  done
  exit 0
fi
kind=${1:?usage: scripts/train_pair.sh robust|standard STAGE... | status}
shift
for stage in "$@"; do run_stage "$kind" "$stage"; done
