"""Timing helpers for benchmark scripts on a shared, noisy machine.

Peers are timed side by side in one process: each repeat runs every case once, in an order that rotates from
repeat to repeat (so no case always runs right after the same neighbour), and the median over repeats is
reported. Compare ratios, not absolute seconds: other work on the machine slows every case alike only when
they are interleaved.

Import this module before torch: it sets ``OMP_WAIT_POLICY=PASSIVE`` (unless already set), which must happen
before OpenMP starts. On a machine shared with other busy processes, OpenMP threads that spin while waiting
at a barrier steal the cores their peers need (measured here: a 2-thread EfficientNet-Lite0 step 3-8x slower
than 1 thread); passive waiting removes that. It applies to every library in the process alike.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402


def set_threads(threads: int | None, interop: int | None = None) -> int:
    """Intra-op threads (default: the machine's cores) and, if given, inter-op threads; returns the intra count."""
    from robustlens.optim.speed import set_threads as _set

    return _set(threads, interop)


def machine() -> dict:
    """A short description of where a benchmark ran (CPU model, cores, torch, threads, load)."""
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        cpu = fields.get("Model name", cpu)
        flags = fields.get("Flags", "").split()
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    except (OSError, subprocess.SubprocessError):
        isa = []
    info = {"cpu": cpu, "cores": os.cpu_count(), "isa": isa, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "python": platform.python_version(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    runtime_env = sys.modules.get("robustlens.runtime_env")
    info["glibc_thresholds_raised"] = bool(runtime_env and runtime_env.allocator_tuned) or any(
        k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))  # for every library here
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def timed(fn: Callable[[], Any], *, sync: bool = False) -> tuple[float, Any]:
    """(seconds, result) of one call; ``sync`` waits for queued CUDA work before and after."""
    if sync:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def interleaved(cases: dict[str, Callable[[], Any]], *, repeats: int, warmup: int = 1,
                between: Callable[[str], None] | None = None, log: Callable[[str], None] | None = None,
                sync: bool = False) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Run every case ``warmup`` times untimed, then ``repeats`` timed rounds with a rotating order.

    Returns (seconds per case: one entry per repeat, the last result of each case). ``between(name)`` runs
    before each call (e.g. a check that the shared model is unchanged); ``log`` gets a line per timed call;
    ``sync`` waits for queued CUDA work around each timed call."""
    names = list(cases)
    results: dict[str, Any] = {}
    for _ in range(warmup):
        for n in names:
            if between:
                between(n)
            results[n] = cases[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            if between:
                between(n)
            t, results[n] = timed(cases[n], sync=sync)
            times[n].append(t)
            if log:
                log(f"  repeat {r + 1}/{repeats} {n}: {t:.2f} s")
    return times, results


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table: ``columns`` are (key, header, format spec such as '.3f' or '')."""
    def cell(row, key, spec):
        v = row.get(key)
        if v is None:
            return "-"
        return format(v, spec) if spec and isinstance(v, (int, float)) else str(v)

    cells = [[h for _, h, _ in columns]] + [[cell(r, k, s) for k, _, s in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(columns))) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def say(text: str, *, quiet: bool = False) -> None:
    """Human-readable progress and tables go to stderr when stdout is reserved for JSON."""
    print(text, file=sys.stderr if quiet else sys.stdout, flush=True)


def write_json(obj: dict, path: str | Path | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=2) + "\n")
