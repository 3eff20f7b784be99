"""Run the command of ``tests/test_training.py::test_ddp_under_torchrun`` many times, under load, and keep the
stderr of every failure: the tool that looked for the cause of that test's one failure (issue #23).

    python scripts/ddp_stress.py [--runs 30] [--hogs 2] [--one-core] [--out runs/ddp_stress]

``--hogs K`` busy-loops K processes beside each run (the other tests of ``pytest -n 2``); ``--one-core`` pins
both ranks to CPU 0 with ``taskset`` so that one rank is often descheduled while the other goes on. Prints one
line per run (return code, seconds, the ranks' error lines) and a summary.

``--teardown`` runs instead a minimal two-rank gloo job (a few all-reduces, a barrier, rank 0 then waits
``--delay`` seconds) that ends with or without ``destroy_process_group``: the failure's signature — rank 1 killed
by SIGABRT ("terminate called without an active exception"), rank 0 by torchrun's SIGTERM — is what a rank gets
that exits with its gloo process group alive while the other rank still runs (session 13: 5 of 10 runs without
the destroy at a 10 ms delay, 0 of 18 with it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

KEYS = ("terminate", "what()", "Error", "error", "Abort", "Signal", "gloo", "Exception")


def hog(stop) -> None:
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2**31


TEARDOWN = """
import os, sys, time
import torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.ones(1000)
for _ in range(5):
    dist.all_reduce(t)
dist.barrier()
if int(os.environ["RANK"]) == 0:
    time.sleep(float(sys.argv[1]))
if sys.argv[2] == "destroy":
    dist.destroy_process_group()
"""


def teardown(runs: int, delay: float, out: Path) -> int:
    script = out / "teardown.py"
    script.write_text(TEARDOWN)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    counts = {}
    for mode in ("destroy", "exit"):
        fails = 0
        for _ in range(runs):
            proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                   str(script), str(delay), mode], capture_output=True, text=True, timeout=120, env=env)
            if proc.returncode != 0:
                fails += 1
                (out / f"teardown-{mode}-{fails}.stderr").write_text(proc.stderr)
        counts[mode] = fails
        print(f"{mode}: {fails} of {runs} runs failed", flush=True)
    print(json.dumps({"teardown_runs": runs, "delay": delay, "failures": counts}))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--hogs", type=int, default=2)
    p.add_argument("--one-core", action="store_true")
    p.add_argument("--data", default="mnist:../shared/data/mnist")
    p.add_argument("--out", default="runs/ddp_stress")
    p.add_argument("--teardown", action="store_true", help="the teardown check instead (see above)")
    p.add_argument("--delay", type=float, default=0.01, help="rank 0's wait before its end in --teardown")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.teardown:
        return teardown(args.runs, args.delay, out)
    stop = mp.Event()
    hogs = [mp.Process(target=hog, args=(stop,), daemon=True) for _ in range(args.hogs)]
    for h in hogs:
        h.start()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "robustlens",
           "train", "--model", "mnist_lenet5", "--data", args.data, "--limit", "96", "--method", "fast",
           "--eps", "0.1", "--epochs", "1", "--batch-size", "16", "--no-progress", "--json"]
    if args.one_core:
        cmd = ["taskset", "-c", "0", *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1", "TORCH_SHOW_CPP_STACKTRACES": "1"}
    failures = []
    try:
        for i in range(args.runs):
            run_out = out / f"run{i}"
            t0 = time.perf_counter()
            proc = subprocess.run([*cmd, "--out", str(run_out)], capture_output=True, text=True, timeout=300, env=env)
            dt = time.perf_counter() - t0
            errs = [ln for ln in proc.stderr.splitlines() if any(k in ln for k in KEYS)]
            print(f"run {i}: rc {proc.returncode}, {dt:.1f} s" + ("" if proc.returncode == 0 else
                  "\n  " + "\n  ".join(errs[-12:])), flush=True)
            if proc.returncode != 0:
                failures.append(i)
                (out / f"run{i}.stderr").write_text(proc.stderr)
            shutil.rmtree(run_out, ignore_errors=True)
    finally:
        stop.set()
        for h in hogs:
            h.join(timeout=5)
    print(json.dumps({"runs": args.runs, "hogs": args.hogs, "one_core": args.one_core, "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
