"""Busy machines: one robustlens command, idle and beside a concurrent 2-thread CPU load, with the new default
settings (``import robustlens`` sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads) and the old ones
(torch's OpenMP default: threads spin while they wait). Prints seconds, loaded/idle ratios and JSON.

Run it on an otherwise quiet machine (the load is the benchmark's own):

    PYTHONPATH=src python benchmarks/busy_machine.py                       # demo --quick, new vs old
    PYTHONPATH=src python benchmarks/busy_machine.py --workload attack     # attack, 20 steps, one image
    PYTHONPATH=src python benchmarks/busy_machine.py --variants all        # + allocator env, ACTIVE, 1 thread
    PYTHONPATH=src python benchmarks/busy_machine.py --tiny --repeats 1    # a seconds-long check that it works

Goals (issue #12): under the load, ``demo`` finishes within 3x its idle time with the new defaults, and the
idle time is unchanged (new idle / old idle ≈ 1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_")

# the old settings: torch is imported before robustlens, so robustlens leaves the OpenMP defaults alone
OLD_ENTRY = "import sys, torch; from robustlens.cli.main import main; sys.exit(main(sys.argv[1:]))"
NEW_ENTRY = "import sys; from robustlens.cli.main import main; sys.exit(main(sys.argv[1:]))"

VARIANTS = {
    "new default": (NEW_ENTRY, {}),
    "old default": (OLD_ENTRY, {}),
    "ACTIVE (spin forever)": (NEW_ENTRY, {"OMP_WAIT_POLICY": "ACTIVE"}),
    "new + malloc env": (NEW_ENTRY, {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "4194304"}),
    "new + 1 thread": (NEW_ENTRY, {"OMP_NUM_THREADS": "1"}),
}

# the concurrent load: another program (torch with its OpenMP defaults) keeping two threads busy
LOAD = """
import torch, time
torch.set_num_threads(2)
a = torch.randn(384, 384)
while True:
    for _ in range(50):
        a = torch.tanh(a @ a * 1e-3)
"""


def workload_argv(kind: str, out: Path, tiny: bool) -> list[str]:
    image = SHARED / "data" / "images" / "corgi.jpg"
    if tiny:
        return ["attack", str(image), "--target", "3", "--steps", "5", "--model", "imagenette_resnet",
                "--weights", "none", "--out", str(out), "--json"]
    if kind == "demo":
        return ["demo", "--quick", "--out", str(out), "--json"]
    return ["attack", str(image), "--target", "282", "--steps", "20", "--no-early-stop", "--out", str(out),
            "--json"]


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def timed_run(entry: str, extra: dict[str, str], argv: list[str], timeout: float) -> float | None:
    """Wall seconds of one run in a fresh interpreter (None: it ran past ``timeout`` or failed)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", entry, *argv], env=clean_env(extra), timeout=timeout,
                              capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode not in (0, 1):
        sys.stderr.write(f"run failed ({proc.returncode}): {proc.stderr.strip()[-500:]}\n")
        return None
    return time.perf_counter() - t0


def start_load() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", LOAD], env=clean_env({}), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def measure(variant: str, argv: list[str], loaded: bool, repeats: int, timeout: float) -> float | None:
    entry, extra = VARIANTS[variant]
    times = []
    for _ in range(repeats):
        load = start_load() if loaded else None
        try:
            if load is not None:
                time.sleep(2.0)  # let the load reach full speed
            times.append(timed_run(entry, extra, argv, timeout))
        finally:
            if load is not None:
                load.kill()
                load.wait()
    done = [t for t in times if t is not None]
    return statistics.median(done) if len(done) == len(times) else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="robustlens idle vs under a 2-thread load, new vs old OpenMP settings")
    p.add_argument("--workload", choices=["demo", "attack"], default="demo")
    p.add_argument("--variants", choices=["main", "all"], default="main",
                   help="main: new vs old default; all: also ACTIVE, allocator env, one thread")
    p.add_argument("--repeats", type=int, default=3, help="runs per cell (median; default 3)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a run counts as not finished")
    p.add_argument("--tiny", action="store_true", help="a 5-step attack on a tiny model: checks the harness only")
    p.add_argument("--out", type=Path, default=Path("/tmp/robustlens-busy"), help="scratch folder")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    args = p.parse_args(argv)
    names = list(VARIANTS) if args.variants == "all" else ["new default", "old default"]
    rows = {}
    for name in names:
        wl = workload_argv(args.workload, args.out / name.replace(" ", "_"), args.tiny)
        idle = measure(name, wl, False, args.repeats, args.timeout)
        busy = measure(name, wl, True, args.repeats, args.timeout)
        rows[name] = {"idle_s": idle and round(idle, 2), "loaded_s": busy and round(busy, 2),
                      "loaded_over_idle": ratio(busy, idle)}
        if not args.json:
            print(f"{name:<24} idle {rows[name]['idle_s']} s   under load {rows[name]['loaded_s']} s   "
                  f"ratio {rows[name]['loaded_over_idle']}", flush=True)
    new, old = rows["new default"], rows["old default"]
    summary = {"workload": "tiny attack" if args.tiny else args.workload, "repeats": args.repeats,
               "cpus": os.cpu_count(), "variants": rows,
               "new_idle_over_old_idle": ratio(new["idle_s"], old["idle_s"]),
               "old_loaded_over_new_loaded": ratio(old["loaded_s"], new["loaded_s"]),
               "goal_loaded_within_3x_idle": new["loaded_over_idle"] is not None and new["loaded_over_idle"] <= 3}
    if not args.json:
        print(f"new idle / old idle = {summary['new_idle_over_old_idle']}; old loaded / new loaded = "
              f"{summary['old_loaded_over_new_loaded']}; new within 3x idle under load: "
              f"{summary['goal_loaded_within_3x_idle']}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
