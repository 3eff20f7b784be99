"""How close does forward+backward(input) get to what this machine can do?

1. The ceiling: the measured rate of large square matmuls (fp32 and bf16, ``--matmul-size`` n, threads =
   cores), FLOPs = 2·n³ per matmul, best of a few calls.
2. The work: the model's forward+backward-w.r.t.-the-input FLOPs per image, counted with
   ``torch.utils.flop_counter.FlopCounterMode`` (frozen parameters, so no weight gradients are counted; a
   multiply-add is 2 FLOPs).
3. The rate of one optimisation step (forward, CE loss, ``autograd.grad`` w.r.t. the input, frozen
   parameters) per configuration and batch size, as a % of the ceiling of its precision. "folded" runs
   the BatchNorm-folded copy robustlens attacks use (``robustlens.optim.fold.prepared``); its rate is still
   counted with the unfolded model's FLOPs (BatchNorm adds no matmul FLOPs).

The machine is shared, so every round measures the ceiling and then every configuration, and the % is
taken within the round (median over rounds reported): slowdowns from other work cancel out.

    python benchmarks/ceiling.py                                   # ResNet-50 + EfficientNet-Lite0, batches 1..32
    python benchmarks/ceiling.py --models resnet50 --batch-sizes 8 16 --rounds 3 --json-out results/ceiling.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, median, say, set_threads, table, timed, write_json  # noqa: E402,I001  (before torch)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from robustlens.optim.prepare import frozen  # noqa: E402
from robustlens.optim.fold import prepared  # noqa: E402
from robustlens.optim.speed import autocast, channels_last_model  # noqa: E402
from robustlens.models import create_model  # noqa: E402

MODELS = {"resnet50": "none", "efficientnet_lite0": None}
# name -> (channels_last, autocast dtype, BatchNorm folded (robustlens.optim.fold.prepared))
CONFIGS = {"fp32": (False, None, False), "fp32 channels-last": (True, None, False),
           "fp32 channels-last folded": (True, None, True), "bf16": (False, torch.bfloat16, False),
           "bf16 channels-last": (True, torch.bfloat16, False),
           "bf16 channels-last folded": (True, torch.bfloat16, True)}


def matmul_rate(dtype: torch.dtype, n: int, calls: int = 3, device: str = "cpu") -> float:
    """Best FLOP/s of an n×n @ n×n matmul in ``dtype`` over ``calls`` calls (after one warm-up)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    sync = a.device.type == "cuda"
    best = min(timed(lambda: a @ b, sync=sync)[0] for _ in range(calls))
    return 2 * n ** 3 / best


def step(model, x: torch.Tensor, dtype: torch.dtype | None, fmt) -> torch.Tensor:
    """One optimisation step's model work: forward, CE loss on float32 logits, gradient w.r.t. the input."""
    z = x.contiguous(memory_format=fmt).requires_grad_(True)
    with autocast(x.device, dtype):
        logits = model(z)
    loss = F.cross_entropy(logits.float(), torch.zeros(len(x), dtype=torch.long, device=x.device), reduction="sum")
    return torch.autograd.grad(loss, z)[0]


def count_flops(model, size: int) -> dict:
    """Forward and forward+backward(input) FLOPs per image (parameters frozen)."""
    x = torch.rand(2, 3, size, size, requires_grad=True)
    with FlopCounterMode(display=False) as fc:
        model(x)
    fwd = fc.get_total_flops() / 2
    with FlopCounterMode(display=False) as fc:
        model(x)[:, 0].sum().backward()  # FlopCounterMode does not support autograd.grad on a leaf
    return {"forward": fwd, "forward_backward_input": fc.get_total_flops() / 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 8, 16, 32])
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--matmul-size", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: cores)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--quick", action="store_true", help="batch sizes 1 and 8, 2 rounds")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (tables go to stderr)")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.batch_sizes, args.rounds = [1, 8], 2
    quiet = args.json
    set_threads(args.threads)
    t0 = time.perf_counter()
    result = {"benchmark": "ceiling", "machine": machine(), "device": args.device, "matmul_size": args.matmul_size,
              "rounds": args.rounds, "models": {}}
    dev, sync = torch.device(args.device), torch.device(args.device).type == "cuda"
    ceilings: dict[str, list[float]] = {"fp32": [], "bf16": []}

    for name in args.models:
        model = create_model(name, MODELS.get(name)).eval()
        size = model.config.input_size
        with frozen(model):
            flops = count_flops(model, size)
            say(f"{model.name}: {flops['forward'] / 1e9:.2f} GFLOP forward, "
                f"{flops['forward_backward_input'] / 1e9:.2f} GFLOP forward+backward(input) per image", quiet=quiet)
            per = flops["forward_backward_input"]
            rates: dict[tuple[str, int], list[float]] = {}
            fractions: dict[tuple[str, int], list[float]] = {}
            model.to(dev)
            probe = torch.rand(1, 3, size, size, device=dev)
            nets = {cfg: prepared(model, probe, channels_last=CONFIGS[cfg][0]) if CONFIGS[cfg][2] else model
                    for cfg in args.configs}
            for cfg in args.configs:  # warm up every shape once (oneDNN builds its kernels on first use)
                cl, dtype, _ = CONFIGS[cfg]
                fmt = torch.channels_last if cl else torch.contiguous_format
                with channels_last_model(nets[cfg], cl):
                    for b in args.batch_sizes:
                        step(nets[cfg], torch.rand(b, 3, size, size, device=dev), dtype, fmt)
            for r in range(args.rounds):
                ceil = {"fp32": matmul_rate(torch.float32, args.matmul_size, device=args.device),
                        "bf16": matmul_rate(torch.bfloat16, args.matmul_size, device=args.device)}
                for k, v in ceil.items():
                    ceilings[k].append(v)
                say(f"  round {r + 1}: matmul fp32 {ceil['fp32'] / 1e9:.1f}, bf16 {ceil['bf16'] / 1e9:.1f} GFLOP/s",
                    quiet=quiet)
                order = args.configs[r % len(args.configs):] + args.configs[:r % len(args.configs)]
                for b in args.batch_sizes:
                    x = torch.rand(b, 3, size, size, device=dev)
                    for cfg in order:
                        cl, dtype, _ = CONFIGS[cfg]
                        fmt = torch.channels_last if cl else torch.contiguous_format
                        with channels_last_model(nets[cfg], cl):
                            t, _ = timed(lambda: step(nets[cfg], x, dtype, fmt), sync=sync)
                        rate = per * b / t
                        rates.setdefault((cfg, b), []).append(rate)
                        fractions.setdefault((cfg, b), []).append(rate / ceil["bf16" if dtype else "fp32"])
        rows = []
        for (cfg, b), v in rates.items():
            rows.append({"config": cfg, "batch": b, "gflops": median(v) / 1e9,
                         "s_per_image": per / median(v), "pct_of_ceiling": 100 * median(fractions[(cfg, b)]),
                         "ceiling": "bf16" if CONFIGS[cfg][1] is not None else "fp32"})
        rows.sort(key=lambda r: (args.configs.index(r["config"]), r["batch"]))
        best = {c: max((r for r in rows if r["ceiling"] == c), key=lambda r: r["pct_of_ceiling"], default=None)
                for c in ("fp32", "bf16")}
        result["models"][model.name] = {"weights": model.weights, "input_size": size, "flops_per_image": flops,
                                        "rows": rows, "best": best}
        for c, r in best.items():
            if r:
                say(f"  best vs the {c} ceiling: {r['config']}, batch {r['batch']}: {r['pct_of_ceiling']:.1f}%",
                    quiet=quiet)
        say(table(rows, [("config", "config", ""), ("batch", "batch", ""), ("gflops", "GFLOP/s", ".1f"),
                         ("s_per_image", "s/image", ".3f"), ("pct_of_ceiling", "% of ceiling", ".1f"),
                         ("ceiling", "vs", "")]), quiet=quiet)
    result["ceiling_gflops"] = {k: {"median": median(v) / 1e9, "best": max(v) / 1e9} for k, v in ceilings.items() if v}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    say(f"ceiling (median over rounds): fp32 {result['ceiling_gflops']['fp32']['median']:.1f}, "
        f"bf16 {result['ceiling_gflops']['bf16']['median']:.1f} GFLOP/s; {result['seconds']} s", quiet=quiet)
    if args.json:
        print(json.dumps(result))
    write_json(result, args.json_out)


if __name__ == "__main__":
    main()
