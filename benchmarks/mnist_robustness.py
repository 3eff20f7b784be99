"""MNIST robustness of the two advertorch LeNet-5 checkpoints, with 1 process and with torchrun.

For each model (standard, adversarially trained) it runs exactly

    robustlens evaluate --model mnist_lenet5 --weights ../shared/models/advertorch_mnist_lenet5_<kind>.pt \
        --data mnist:../shared/data/mnist --norm linf --eps 0.3 --steps 40 --step-size 0.01 --json

once as one process and once under `torchrun --standalone --nproc_per_node=2 -m robustlens ...`, and checks
that the counts are equal. Every process runs one CPU thread (``OMP_NUM_THREADS=1``, torchrun's default): CPU
kernels may sum in a different order with another thread count, and a float difference in the last bit can
flip a borderline example. Expected: clean >= 98% for both; robust <= 10% (standard) and >= 95% (adversarially
trained).

    python benchmarks/mnist_robustness.py [--limit N] [--processes 2] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _shared import SHARED, require

KINDS = ("clntrained", "advtrained")


def command(kind: str, limit: int | None, batch_size: int) -> list[str]:
    weights = require(SHARED / "models" / f"advertorch_mnist_lenet5_{kind}.pt")
    data = require(SHARED / "data" / "mnist")
    cmd = ["evaluate", "--attack", "pgd", "--model", "mnist_lenet5", "--weights", str(weights), "--data", f"mnist:{data}",
           "--norm", "linf", "--eps", "0.3", "--steps", "40", "--step-size", "0.01", "--json",
           "--batch-size", str(batch_size), "--no-progress"]
    return cmd + (["--limit", str(limit)] if limit else [])


def run(args: list[str], processes: int) -> tuple[dict, float]:
    launcher = [sys.executable, "-m", "robustlens"] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
         "-m", "robustlens"]
    t0 = time.perf_counter()
    proc = subprocess.run(launcher + args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(launcher + args)}\n{proc.stderr[-3000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]), time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, help="evaluate this many test images (default: all 10000)")
    p.add_argument("--processes", type=int, default=2, help="processes for the torchrun run (default 2)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--json-out", help="write the results here")
    args = p.parse_args()
    rows, ok = [], True
    for kind in KINDS:
        cmd = command(kind, args.limit, args.batch_size)
        one, t1 = run(cmd, 1)
        many, tk = run(cmd, args.processes)
        same = all(one[k] == many[k] for k in ("n", "clean_correct", "robust_correct"))
        ok &= same
        rows.append({"model": kind, "n": one["n"], "clean_accuracy": one["clean_accuracy"],
                     "robust_accuracy": one["robust_accuracy"], "clean_correct": one["clean_correct"],
                     "robust_correct": one["robust_correct"], "seconds_1_process": round(t1, 1),
                     f"seconds_{args.processes}_processes": round(tk, 1),
                     f"robust_correct_{args.processes}_processes": many["robust_correct"],
                     "counts_equal": same, "command": "robustlens " + " ".join(cmd)})
        print(f"{kind:<11} n={one['n']:>5}  clean {one['clean_accuracy']:.4f}  robust {one['robust_accuracy']:.4f}  "
              f"({one['robust_correct']} vs {many['robust_correct']} with {args.processes} processes: "
              f"{'equal' if same else 'DIFFERENT'}; {t1:.0f}s / {tk:.0f}s)", flush=True)
    std, adv = rows
    checks = {"clean >= 0.98 (both)": std["clean_accuracy"] >= 0.98 and adv["clean_accuracy"] >= 0.98,
              "standard robust <= 0.10": std["robust_accuracy"] <= 0.10,
              "adversarially trained robust >= 0.95": adv["robust_accuracy"] >= 0.95,
              f"1 and {args.processes} processes give equal counts": ok}
    for name, passed in checks.items():
        print(f"  [{'ok' if passed else 'FAIL'}] {name}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"rows": rows, "checks": checks}, f, indent=2)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
