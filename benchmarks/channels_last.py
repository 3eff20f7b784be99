"""Channels-last on the CPU: one input-gradient step (forward + backward to the input, what every attack and
attribution runs) of each zoo architecture, NCHW vs NHWC, same inputs, interleaved, median of repeats.

This decides ``robustlens.optim.speed.CHANNELS_LAST_MIN_SIZE`` (the "auto" rule). Quiet machine only.

    PYTHONPATH=src python benchmarks/channels_last.py [--threads 2] [--repeats 5] [--json-out F]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, machine, median, set_threads, write_json  # noqa: E402,I001  (before torch)

import torch  # noqa: E402

from robustlens.models import create_model  # noqa: E402

CASES = [("mnist_lenet5", 500), ("mnist_smallcnn", 500), ("cifar_preactresnet18", 128), ("imagenette_resnet", 256),
         ("imagenette128_resnet", 128), ("efficientnet_lite0", 16)]


def step_fn(model, x):
    def run():
        z = x.detach().clone().requires_grad_(True)
        out = model(z)
        torch.autograd.grad(out.float().logsumexp(1).sum(), z)
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json-out")
    args = p.parse_args()
    set_threads(args.threads)
    rows = []
    for name, batch in CASES:
        weights = None if name == "efficientnet_lite0" else "none"
        m = create_model(name, weights).eval()
        c, s = m.config.channels, m.config.input_size
        x = torch.rand(batch, c, s, s, generator=torch.Generator().manual_seed(0))
        nhwc = create_model(name, weights).eval().to(memory_format=torch.channels_last)
        fns = {"nchw": step_fn(m, x), "nhwc": step_fn(nhwc, x.contiguous(memory_format=torch.channels_last))}
        times, _ = interleaved(fns, repeats=args.repeats)
        t = {k: median(v) for k, v in times.items()}
        rows.append({"model": name, "size": s, "batch": batch, "nchw_s": t["nchw"], "nhwc_s": t["nhwc"],
                     "nhwc_speedup": t["nchw"] / t["nhwc"]})
        print(f"{name:<22} {s:>4}px batch {batch:>4}: NCHW {t['nchw'] * 1e3:8.1f} ms  NHWC {t['nhwc'] * 1e3:8.1f} ms"
              f"  NHWC speed-up {t['nchw'] / t['nhwc']:.2f}x", flush=True)
    if args.json_out:
        write_json({"machine": machine(), "threads": args.threads, "rows": rows}, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
