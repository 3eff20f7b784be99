"""The glibc allocator thresholds, measured on the project's own commands, side by side.

Each workload is a robustlens command as a user runs it, in a fresh interpreter, under three settings:

- ``glibc default``: ``ROBUSTLENS_MALLOPT=0`` (what robustlens did before it tuned the allocator);
- ``robustlens default``: ``import robustlens`` raises the mmap and trim thresholds with ``mallopt``;
- ``env at start``: ``MALLOC_MMAP_THRESHOLD_=MALLOC_TRIM_THRESHOLD_=1073741824`` set before the process starts
  (robustlens then leaves the allocator alone).

``LD_PRELOAD`` of jemalloc or tcmalloc is added when the library is found (``--preload PATH`` to name one).
Runs are interleaved (rotating order) and the median of ``--repeats`` is reported with ratios to the glibc
default. Quiet machine only.

    PYTHONPATH=src python benchmarks/allocator.py [--repeats 3] [--workloads lenet_pgd,attack,explain,train]
        [--json-out F]
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ENTRY = "import sys; from robustlens.cli.main import main; sys.exit(main(sys.argv[1:]))"
GIB = str(1 << 30)


def workloads(out: Path) -> dict[str, list[str]]:
    corgi = str(SHARED / "data" / "images" / "corgi.jpg")
    return {
        # PGD-40 (L∞ 0.3) on the first 1000 MNIST digits, adversarially trained LeNet-5
        "lenet_pgd": ["evaluate", "--model", "mnist_lenet5", "--weights",
                      str(SHARED / "models" / "advertorch_mnist_lenet5_advtrained.pt"), "--data",
                      f"mnist:{SHARED / 'data' / 'mnist'}", "--limit", "1000", "--attack", "pgd", "--norm", "linf",
                      "--eps", "0.3", "--steps", "40", "--step-size", "0.01", "--json", "--no-progress"],
        # the problem set's targeted attack on the default model (EfficientNet-Lite0), 50 steps, no early stop
        "attack": ["attack", corgi, "--target", "282", "--steps", "50", "--no-early-stop", "--out",
                   str(out / "attack"), "--json"],
        # Integrated Gradients, 50 steps, on the default model
        "explain": ["explain", corgi, "--method", "ig", "--out", str(out / "explain"), "--json"],
        # 20 training steps of the 128 px Imagenette ResNet (fast AT), batch 64
        "train": ["train", "--model", "imagenette128_resnet", "--weights", "none", "--data",
                  f"folder:{SHARED / 'data' / 'imagenette128' / 'val'}", "--limit", "1280", "--epochs", "1",
                  "--batch-size", "64", "--method", "fast", "--norm", "l2", "--eps", "1.5", "--out",
                  str(out / "train"), "--json", "--no-progress"],
    }


def variants(preload: list[str]) -> dict[str, dict[str, str]]:
    v = {"glibc default": {"ROBUSTLENS_MALLOPT": "0"}, "robustlens default": {},
         "env at start": {"MALLOC_MMAP_THRESHOLD_": GIB, "MALLOC_TRIM_THRESHOLD_": GIB}}
    for lib in preload:
        v[f"LD_PRELOAD {Path(lib).name}"] = {"LD_PRELOAD": lib, "ROBUSTLENS_MALLOPT": "0"}
    return v


def find_preloads() -> list[str]:
    found = []
    for name in ("jemalloc", "tcmalloc"):
        lib = ctypes.util.find_library(name)
        if lib:
            found.append(lib)
    return found


def run_once(argv: list[str], extra: dict[str, str]) -> float:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "ROBUSTLENS_MALLOPT", "LD_PRELOAD")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", ENTRY, *argv], env=env, capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed under {extra}: {proc.stderr.strip()[-500:]}")
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workloads", default="lenet_pgd,attack,explain,train")
    p.add_argument("--preload", action="append", default=None, help="an allocator library to LD_PRELOAD")
    p.add_argument("--json-out")
    args = p.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"skipped: needs {SHARED}")
    preload = args.preload if args.preload is not None else find_preloads()
    report: dict = {"load_average_at_start": os.getloadavg(), "preload": preload, "repeats": args.repeats,
                    "results": {}}
    with tempfile.TemporaryDirectory() as d:
        all_work = workloads(Path(d))
        vs = variants(preload)
        for name in args.workloads.split(","):
            argv = all_work[name]
            times: dict[str, list[float]] = {k: [] for k in vs}
            for r in range(args.repeats):
                order = list(vs)[r % len(vs):] + list(vs)[:r % len(vs)]
                for k in order:
                    times[k].append(run_once(argv, vs[k]))
            med = {k: statistics.median(v) for k, v in times.items()}
            base = med["glibc default"]
            report["results"][name] = {"argv": argv, "seconds": times, "median": med,
                                       "speedup_vs_glibc_default": {k: base / v for k, v in med.items()}}
            print(f"{name}:", "  ".join(f"{k} {v:.1f}s ({base / v:.2f}x)" for k, v in med.items()), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
