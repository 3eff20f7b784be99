"""Training throughput: ``robustlens train`` against a plain PyTorch loop written the textbook way.

Same network, data, batch, schedule and attack in both:

- **plain**: ``torchvision.datasets.ImageFolder`` with ``Resize``/``RandomCrop(padding)``/``RandomHorizontalFlip``/
  ``ToTensor`` (JPEG decoded every epoch) in a ``DataLoader`` (``--workers``, shuffled), float32, NCHW, the
  attack written inline (fast AT: a random start in the L2 ball, one normalised gradient step of 1.25·ε in eval
  mode, ``renorm`` back into the ball, clipped to [0,1]), then SGD with Nesterov momentum on the cross-entropy;
- **robustlens**: :func:`robustlens.robust.training.train` on the images decoded once into a uint8 tensor
  (the decode time is reported and counted once), channels-last, bf16 autocast where the CPU has it natively
  (``precision="auto"``), the lean training adversary; ``robustlens-fp32`` and ``robustlens-nchw`` switch one
  lever off each.

Images/s: ``--steps`` timed steps after ``--warmup`` untimed ones, in ``--rounds`` rounds whose order rotates
(median reported). ``--epochs E`` also trains plain and robustlens for E epochs each with the full schedule and
reports val accuracy (all 3925 val images) and L2 PGD-10 robust accuracy at the training ε on 500 of them.
The fraction of the matmul ceiling: FLOPs of one training image (attack and update, counted with
``FlopCounterMode``) × images/s over the rate of large matmuls in the precision used.

    PYTHONPATH=src python benchmarks/train_speed.py [--arch r18-48p] [--method fast|standard] [--steps 20]
        [--rounds 2] [--epochs 0] [--threads 2] [--workers 1] [--json-out docs/results/train_speed.json]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, median, say, set_threads, table, write_json  # noqa: E402,I001  (before torch)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _shared import SHARED, require  # noqa: E402
from arch_pilot import CANDIDATES, build  # noqa: E402
from ceiling import matmul_rate  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from robustlens.robust import training  # noqa: E402
from robustlens.robust.datasets import LabelledImages, open_dataset, preload, spread_indices  # noqa: E402
from robustlens.robust.evaluate import evaluate_robustness  # noqa: E402
from robustlens.robust.training import TrainConfig, eps_at, learning_rate, train  # noqa: E402


def plain_loader(root: Path, cfg: TrainConfig, size: int, workers: int, seed: int):
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    tf = T.Compose([T.Resize((size, size)), T.RandomCrop(size, padding=cfg.crop_padding),
                    T.RandomHorizontalFlip(), T.ToTensor()])
    ds = ImageFolder(str(root), transform=tf)
    return torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                       num_workers=workers, generator=torch.Generator().manual_seed(seed),
                                       persistent_workers=workers > 0)


def plain_fast_at(model, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """The textbook L2 fast-AT input: random start in the ball, one 1.25·ε step, renorm, clip."""
    d = x[0].numel()
    model.eval()
    delta = torch.randn_like(x)
    radius = eps * torch.rand(len(x)).pow(1.0 / d)
    delta = delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) * radius.view(-1, 1, 1, 1)
    xa = (x + delta).clamp(0, 1).requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
    g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    delta = (xa.detach() + 1.25 * eps * g - x).renorm(2, 0, eps)
    model.train()
    return (x + delta).clamp(0, 1)


def plain_train(model, loader, cfg: TrainConfig, *, total: int, stop: int, timed_from: int) -> tuple[float, int]:
    """The plain loop for ``stop`` steps of a ``total``-step schedule; (seconds, images) from ``timed_from``."""
    net = model.net.train()
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    step, t0, seen = 0, time.perf_counter(), 0
    while step < stop:
        for x, y in loader:
            if step == timed_from:
                t0, seen = time.perf_counter(), 0
            for g in opt.param_groups:
                g["lr"] = learning_rate(cfg, step, total)
            xt = plain_fast_at(model, x, y, eps_at(cfg, step, total)) if cfg.method == "fast" else x
            loss = F.cross_entropy(model(xt), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step, seen = step + 1, seen + len(y)
            if step >= stop:
                break
    model.eval()
    return time.perf_counter() - t0, seen


def robustlens_train(model, images, labels, cfg: TrainConfig, out: Path, *, stop: int, timed_from: int,
                     lever: str = "") -> tuple[float, int]:
    """``train`` for ``stop - timed_from`` timed steps after ``timed_from`` untimed ones; (seconds, images)."""
    saved = training.use_channels_last
    if lever == "nchw":
        training.use_channels_last = lambda *a, **k: False  # type: ignore[assignment]
    try:
        if timed_from:  # the same shapes once (oneDNN primitives), in a throw-away folder
            train(model, images, labels, cfg, out=out / "warm", log_every=0, max_steps=timed_from)
        t0 = time.perf_counter()
        train(model, images, labels, cfg, out=out, log_every=0, max_steps=stop - timed_from)
        return time.perf_counter() - t0, (stop - timed_from) * cfg.batch_size
    finally:
        training.use_channels_last = saved


def flops_per_image(arch: str, cfg: TrainConfig, size: int) -> float:
    """FLOPs of one training step per image: the attack's forward + input gradient (per attack step), the
    update's forward + backward (weights and activations); counted in float32 on a batch of 4."""
    from robustlens.optim.prepare import frozen

    model = build(arch).eval()
    x, y = torch.rand(4, 3, size, size), torch.randint(0, 10, (4,))
    attack = 0.0
    if cfg.method != "standard":
        with frozen(model), FlopCounterMode(display=False) as fc:
            xa = x.clone().requires_grad_(True)
            F.cross_entropy(model(xa), y).backward()
        attack = fc.get_total_flops() * cfg.training_method().attack_steps
    model.train()
    with FlopCounterMode(display=False) as fc:
        loss, _ = cfg.training_method().loss(model.net, model, x, x, y)
        loss.backward()
    return (attack + fc.get_total_flops()) / 4


def accuracy(model, val: LabelledImages, eps: float) -> dict:
    clean = evaluate_robustness(model, val, norm="l2", eps=[0.0], steps=1, batch_size=256)
    out = {"val_accuracy": clean.clean_accuracy}
    if eps > 0:
        r = evaluate_robustness(model, val.subset(spread_indices(len(val), 500)), norm="l2", eps=[eps], steps=10,
                                batch_size=100)
        out["val500_pgd10"] = r.robust_accuracy[eps]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="r18-48p", choices=list(CANDIDATES))
    p.add_argument("--method", default="fast", choices=["fast", "standard"])
    p.add_argument("--eps", type=float, default=1.5, help="L2 training ε (fast AT; default 1.5)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps per case and round (default 20)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=0, help="also train E epochs each and compare accuracy")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers of the plain loop (default 1)")
    p.add_argument("--cases", default="plain,robustlens,robustlens-fp32,robustlens-nchw")
    p.add_argument("--out", default="runs/train_speed")
    p.add_argument("--json-out")
    args = p.parse_args()
    set_threads(args.threads)
    root = require(SHARED / "data" / "imagenette128")
    size = 128
    cfg = TrainConfig(method=args.method, norm="l2", eps=args.eps if args.method == "fast" else 0.0,
                      eps_ramp=0.2 if args.method == "fast" else 0.0, epochs=1, batch_size=args.batch_size,
                      lr=0.1, schedule="onecycle", warmup=0.2, weight_decay=5e-4, crop_padding=8, flip=True)
    report: dict = {"machine": machine(), "arch": args.arch, "train_config": cfg.to_dict(),
                    "plain_workers": args.workers, "compute_dtype_auto": str(training.training_dtype("auto", "cpu"))}
    ref = build(args.arch)
    t0 = time.perf_counter()
    images, labels = preload(open_dataset(f"folder:{root / 'train'}", ref), workers=0)
    report["decode_once_seconds"] = round(time.perf_counter() - t0, 1)
    say(f"robustlens decodes the {len(labels)} training images once: {report['decode_once_seconds']} s")
    per_epoch = len(labels) // cfg.batch_size
    stop = args.warmup + args.steps
    cases = args.cases.split(",")
    seconds: dict[str, list[float]] = {c: [] for c in cases}
    for r in range(args.rounds):
        for case in cases[r % len(cases):] + cases[:r % len(cases)]:
            model = build(args.arch)
            if case == "plain":
                loader = plain_loader(root / "train", cfg, size, args.workers, r)
                s, n = plain_train(model, loader, cfg, total=per_epoch, stop=stop, timed_from=args.warmup)
            else:
                c = cfg if case != "robustlens-fp32" else TrainConfig.from_dict({**cfg.to_dict(), "precision": "fp32"})
                s, n = robustlens_train(model, images, labels, c, Path(args.out) / f"{case}-{r}", stop=stop,
                                        timed_from=args.warmup, lever="nchw" if case == "robustlens-nchw" else "")
            seconds[case].append(n / s)
            say(f"  round {r + 1}: {case:<16} {n / s:7.1f} images/s")
    flops = flops_per_image(args.arch, cfg, size)
    peak = {"float32": matmul_rate(torch.float32, 2048), "bfloat16": matmul_rate(torch.bfloat16, 2048)}
    rows = []
    for case in cases:
        rate = median(seconds[case])
        dtype = "bfloat16" if case in ("robustlens", "robustlens-nchw") and training.training_dtype("auto", "cpu") \
            else "float32"
        rows.append({"case": case, "images_per_s": round(rate, 1), "vs_plain": None, "dtype": dtype,
                     "ceiling_pct": round(100 * rate * flops / peak[dtype], 1)})
    base = next((r["images_per_s"] for r in rows if r["case"] == "plain"), None)
    for row in rows:
        row["vs_plain"] = round(row["images_per_s"] / base, 2) if base else None
    report.update({"rounds": seconds, "rows": rows, "flops_per_image": flops,
                   "matmul_peak_flops": {k: round(v) for k, v in peak.items()}})
    say(table(rows, [("case", "case", ""), ("images_per_s", "images/s", ".1f"), ("vs_plain", "× plain", ".2f"),
                     ("dtype", "compute", ""), ("ceiling_pct", "% matmul ceiling", ".1f")]))
    say(f"{flops / 1e9:.2f} GFLOP per training image; matmul ceiling fp32 {peak['float32'] / 1e9:.0f}, "
        f"bf16 {peak['bfloat16'] / 1e9:.0f} GFLOP/s")
    if args.epochs:
        report["accuracy"] = compare_accuracy(args, cfg, root, images, labels, size)
    write_json(report, args.json_out)
    return 0


def compare_accuracy(args, cfg: TrainConfig, root: Path, images, labels, size: int) -> dict:
    """Plain and robustlens trained for ``args.epochs`` epochs each with the full schedule, then evaluated."""
    ref = build(args.arch)
    val_images, val_labels = preload(open_dataset(f"folder:{root / 'val'}", ref), workers=0)
    val = LabelledImages(ref.config, val_labels.tolist(), pixels=val_images, description="val")
    full = TrainConfig.from_dict({**cfg.to_dict(), "epochs": args.epochs})
    total = args.epochs * (len(labels) // cfg.batch_size)
    out = {}
    for case in ("plain", "robustlens"):
        model = build(args.arch)
        t0 = time.perf_counter()
        if case == "plain":
            plain_train(model, plain_loader(root / "train", full, size, args.workers, 0), full, total=total,
                        stop=total, timed_from=0)
        else:
            train(model, images, labels, full, out=Path(args.out) / "accuracy", log_every=0)
        seconds = time.perf_counter() - t0
        out[case] = {"seconds": round(seconds, 1), "images_per_s": round(total * cfg.batch_size / seconds, 1),
                     **accuracy(model, val, cfg.eps)}
        say(f"{case}: {args.epochs} epochs in {seconds:.0f} s; " + ", ".join(
            f"{k} {v:.4f}" for k, v in out[case].items() if isinstance(v, float) and not math.isnan(v)))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
