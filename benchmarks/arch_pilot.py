"""Which architecture makes the most perceptible robust model per CPU-hour? A short pilot for the robust pair.

Each candidate (widths / depths of :class:`robustlens.models.small.ImagenetteResNet`) is adversarially trained
on Imagenette at 128 px with the same recipe (fast AT, L2 ε 1.5 ramped over the first 20%, one-cycle learning
rate, batch 128, crops and flips) for the same budget of training seconds: its number of epochs is the budget
times its measured images/s over the 9469 training images. Then each is judged as
``benchmarks/perceptual_judge.py`` judges the shipped models (the bundled EfficientNet-Lite0 looks at the
saved 8-bit targeted L2 attacks, ε 20, 60 steps, and at layer4 inversions from noise), with two continuous
figures beside the top-5 rates, which are near zero after a short budget: the judge's median rank of the
target (attacks) / source (inversions) among its 1000 classes, and its mean probability of it.

    PYTHONPATH=src python benchmarks/arch_pilot.py [--budget 480] [--threads 2] [--n 100]
        [--only r10-24,r18-48p,r18-64p] [--json-out docs/results/arch_pilot.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from _judge import Judge
from _shared import SHARED, require
from perceptual_judge import inversions, per_class

from robustlens.models.classifier import SubsetClassifier
from robustlens.models.small import IMAGENETTE128_CONFIG, IMAGENETTE_WNIDS, ImagenetteResNet
from robustlens.recipes.attacks import attack
from robustlens.robust.datasets import LabelledImages, open_dataset, preload, spread_indices
from robustlens.robust.evaluate import evaluate_robustness
from robustlens.robust.training import TrainConfig, train

CANDIDATES = {
    "r10-24": {"widths": (24, 48, 96, 192), "blocks": (1, 1, 1, 1), "stem_pool": False},  # the 2026 pair's net
    "r18-48p": {"widths": (48, 96, 192, 384), "blocks": (2, 2, 2, 2), "stem_pool": True},
    "r18-64p": {"widths": (64, 128, 256, 512), "blocks": (2, 2, 2, 2), "stem_pool": True},  # ResNet-18 widths
    "r18-32": {"widths": (32, 64, 128, 256), "blocks": (2, 2, 2, 2), "stem_pool": False},  # layer4 8×8 at 128 px
}


def build(name: str, seed: int = 0) -> SubsetClassifier:
    torch.manual_seed(seed)
    net = ImagenetteResNet(**CANDIDATES[name])
    return SubsetClassifier(net, IMAGENETTE128_CONFIG, class_wnids=IMAGENETTE_WNIDS, name=f"pilot-{name}",
                            weights="pilot")


def rank_figures(judge: Judge, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Top-1/top-5 (Judge.scores) plus the median rank (1 = top) and mean probability of the wanted class."""
    p = judge.probs(images)
    c = judge.imagenet[labels.cpu()]
    wanted = p.gather(1, c[:, None])
    rank = (p > wanted).sum(1) + 1
    s = judge.scores(images, labels)
    return {"top1": s["top1"], "top5": s["top5"], "median_rank": float(rank.float().median()),
            "mean_prob": float(wanted.mean()), "n": len(images)}


def images_per_second(name: str, images, labels, cfg: TrainConfig, out: Path) -> float:
    m = build(name)
    probe = TrainConfig.from_dict({**cfg.to_dict(), "epochs": 1})
    train(m, images[:128 * 2], labels[:128 * 2], probe, out=out / "warm", log_every=0)  # oneDNN primitives
    t0 = time.perf_counter()
    r = train(m, images[:128 * 6], labels[:128 * 6], probe, out=out / "probe", log_every=0)
    return r.steps * cfg.batch_size / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=480.0, help="training seconds per candidate (default 480)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n", type=int, default=100, help="judged val images (default 100, 10 per class)")
    p.add_argument("--only", default=",".join(CANDIDATES))
    p.add_argument("--out", default="runs/arch_pilot")
    p.add_argument("--json-out", help="JSON report (candidates already in it are kept)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = require(SHARED / "data" / "imagenette128")
    out = Path(args.out)
    ref = build("r10-24")
    t0 = time.perf_counter()
    images, labels = preload(open_dataset(f"folder:{root / 'train'}", ref), workers=0)
    val_set = open_dataset(f"folder:{root / 'val'}", ref)
    val_images, val_labels = preload(val_set, workers=0)
    print(f"decoded {len(labels)} + {len(val_labels)} images once in {time.perf_counter() - t0:.1f} s", flush=True)
    cfg = TrainConfig(method="fast", norm="l2", eps=1.5, eps_ramp=0.2, epochs=1, batch_size=128, lr=0.1,
                      schedule="onecycle", warmup=0.2, weight_decay=5e-4, crop_padding=8, flip=True)
    judge = Judge(IMAGENETTE_WNIDS)
    val = LabelledImages(ref.config, val_labels.tolist(), pixels=val_images, description="val")
    pick = val.subset(per_class(val_labels, args.n))
    x = torch.stack([pick[i][0] for i in range(len(pick))])
    y = torch.as_tensor(pick.labels)
    targets = (y + 1 + torch.arange(len(y)) % 9) % 10
    report: dict = {"budget_s": args.budget, "threads": args.threads, "train_config": cfg.to_dict(),
                    "cpu": os.popen("lscpu | grep 'Model name'").read().strip(), "candidates": {}}
    if args.json_out and Path(args.json_out).is_file():
        report["candidates"] = json.loads(Path(args.json_out).read_text())["candidates"]
    for name in args.only.split(","):
        rate = images_per_second(name, images, labels, cfg, out / name)
        epochs = max(1, round(args.budget * rate / len(labels)))
        model = build(name)
        params = sum(q.numel() for q in model.parameters())
        print(f"{name}: {params / 1e6:.2f} M parameters, {rate:.1f} images/s -> {epochs} epochs", flush=True)
        t1, c1 = time.perf_counter(), time.process_time()
        run = train(model, images, labels, TrainConfig.from_dict({**cfg.to_dict(), "epochs": epochs}),
                    out=out / name / "train", log_every=0, progress=True)
        spent, cpu = time.perf_counter() - t1, time.process_time() - c1
        clean = evaluate_robustness(model, val, norm="l2", eps=[0.0], steps=1, batch_size=256)
        rob = evaluate_robustness(model, val.subset(spread_indices(len(val), 500)), norm="l2", eps=[1.0, 1.5],
                                  steps=10, batch_size=100)
        adv = attack(model, x, target=targets, norm="l2", eps=20.0, steps=60, early_stop=False, seed=0).adversarial
        inv = inversions(model, x, "layer4", 300, 0)
        row = {"params": params, "images_per_s": round(rate, 1), "epochs": epochs, "steps": run.steps,
               "train_seconds": round(spent, 1), "train_cpu_seconds": round(cpu, 1),
               "val_accuracy": clean.clean_accuracy, "val500_pgd10_l2": rob.robust_accuracy,
               "attack_judge_target": rank_figures(judge, adv, targets),
               "inversion_judge_source": rank_figures(judge, inv, y)}
        report["candidates"][name] = row
        a, i = row["attack_judge_target"], row["inversion_judge_source"]
        print(f"{name}: {spent:.0f} s, val {clean.clean_accuracy:.3f}, PGD-10 L2 1.0/1.5 "
              f"{rob.robust_accuracy[1.0]:.3f}/{rob.robust_accuracy[1.5]:.3f}; attack target top-5 {a['top5']:.2f} "
              f"median rank {a['median_rank']:.0f} p {a['mean_prob']:.4f}; inversion source top-5 {i['top5']:.2f} "
              f"median rank {i['median_rank']:.0f} p {i['mean_prob']:.4f}", flush=True)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
