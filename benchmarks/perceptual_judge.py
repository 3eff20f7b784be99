"""Does a robust model paint what it is asked for? Two Imagenette models judged by an independent classifier.

For N val images (N/10 per class) and, for each, a target class different from its label:

1. a large-ε targeted L2 attack on each model (default ε 20 at 128 px, 60 steps, no early stop; the 8-bit images
   the attack returns, i.e. what a user saves);
2. an inversion from uniform noise of each model's features at its deepest block (default ``layer4``, 300 Adam
   steps, learning rate 0.1 with a cosine decay: the settings of :func:`robustlens.recipes.inversion.invert`).

The judge (default the bundled ImageNet EfficientNet-Lite0, never trained against these models; images upsampled
to 224 px, bicubic) says whether its top-1 / top-5 holds the *target* of each attack and the *source* class of
each inversion. The judge's own accuracy on the clean images is the ceiling. ``--accuracy`` adds clean accuracy
and L2 PGD-20 (random start) robust accuracy of both models on the whole val split.

    PYTHONPATH=src python benchmarks/perceptual_judge.py [--robust imagenette128_resnet18_robust]
        [--standard imagenette128_resnet18_standard|none] [--n 100] [--eps 20] [--steps 60] [--layer layer4]
        [--invert-steps 300] [--invert-start uniform|gray] [--accuracy --accuracy-eps 1.0,1.5] [--json-out F] [--figure F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from _judge import Judge
from _shared import SHARED, require

from robustlens.models import DEFAULT_ROBUST_MODEL, create_model
from robustlens.models.counterparts import standard_for
from robustlens.models.labels import imagenet_classes
from robustlens.optim.engine import optimize
from robustlens.optim.objectives import FeatureDistance
from robustlens.optim.steps import Adam, Cosine
from robustlens.optim.threat import Unconstrained
from robustlens.recipes.attacks import attack
from robustlens.recipes.inversion import STARTS, noise_image
from robustlens.robust.datasets import open_dataset
from robustlens.robust.evaluate import evaluate_robustness


def load(spec: str):
    name, _, weights = spec.partition("=")
    return create_model(name, weights or None)


def per_class(labels: torch.Tensor, n: int, classes: int = 10) -> list[int]:
    """n indices, n/classes per class, spread over each class's images."""
    out = []
    for c in range(classes):
        idx = (labels == c).nonzero().flatten()
        k = n // classes
        out += idx[torch.linspace(0, len(idx) - 1, k).round().long()].tolist()
    return out


def inversions(model, x: torch.Tensor, layer: str, steps: int, seed: int, start: str = "uniform") -> torch.Tensor:
    """One inversion per image from seeded noise (``start``: see :func:`robustlens.recipes.inversion.noise_image`),
    the whole batch at once: the objective and step rule of :func:`robustlens.recipes.inversion.invert` (relative
    squared feature distance, Adam 0.1, cosine)."""
    from robustlens.models.layers import get_activations

    with torch.inference_mode():
        ref = get_activations(model, x, [layer])[layer].clone()
    gen = torch.Generator().manual_seed(seed)
    res = optimize(model, noise_image(x.shape, start, gen), FeatureDistance(layer, ref), threat=Unconstrained(),
                   steps=steps, rule=Adam(0.1, schedule=Cosine()), seed=seed, progress=True, desc=f"invert {layer}")
    return res.x.detach()


def judged(judge: Judge, images: torch.Tensor, classes: torch.Tensor) -> dict:
    s = judge.scores(images, classes)
    return {"top1": s["top1"], "top5": s["top5"], "n": s["n"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--robust", default=DEFAULT_ROBUST_MODEL,
                   help="model (NAME or NAME=WEIGHTS); none: judge the standard model alone")
    p.add_argument("--standard", default=standard_for(DEFAULT_ROBUST_MODEL)[0],
                   help="model (NAME or NAME=WEIGHTS); none: judge the robust model alone (a point on a training "
                        "curve: half the work)")
    p.add_argument("--judge", default="efficientnet_lite0", help="an ImageNet (1000-class) zoo model")
    p.add_argument("--n", type=int, default=100, help="val images, n/10 per class (default 100)")
    p.add_argument("--eps", type=float, default=20.0, help="L2 radius of the targeted attacks (default 20)")
    p.add_argument("--steps", type=int, default=60, help="attack steps (default 60, no early stop)")
    p.add_argument("--layer", default="layer4", help="inversion layer (default layer4, the deepest block)")
    p.add_argument("--invert-steps", type=int, default=300)
    p.add_argument("--invert-start", choices=list(STARTS), default="uniform",
                   help="the inversions' noise start (default uniform: U(0,1); gray: 0.5 + N(0, 0.05^2), the seed "
                        "of MadryLab robustness's inversion example)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--accuracy", action="store_true", help="also clean and PGD-20 accuracy on the whole val split")
    p.add_argument("--accuracy-eps", default="1.0", help="L2 radii for --accuracy, comma-separated (default 1.0)")
    p.add_argument("--json-out")
    p.add_argument("--figure", help="PNG of examples")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    val = require(SHARED / "data" / "imagenette128" / "val")
    models = {k: load(spec) for k, spec in (("robust", args.robust), ("standard", args.standard)) if spec != "none"}
    if not models:
        sys.exit("--robust none and --standard none: nothing to judge")
    first = next(iter(models.values()))
    if any(m.config.input_size != first.config.input_size for m in models.values()):
        sys.exit("the two models must take the same input size")
    judge = Judge(first.class_wnids, args.judge)
    report: dict = {"models": {k: f"{m.name} ({m.weights})" for k, m in models.items()},
                    "judge": args.judge, "n": args.n, "eps": args.eps, "steps": args.steps, "layer": args.layer,
                    "invert_steps": args.invert_steps, "invert_start": args.invert_start,
                    "input_size": first.config.input_size, "seed": args.seed}

    full = open_dataset(f"folder:{val}", first)
    if args.accuracy:
        eps = [float(e) for e in args.accuracy_eps.split(",")]
        for k, m in models.items():
            t0 = time.perf_counter()
            r = evaluate_robustness(m, full, norm="l2", eps=eps, steps=20, batch_size=100, seed=args.seed,
                                    progress=True)
            report[f"{k}_accuracy"] = {**r.to_dict(), "seconds": round(time.perf_counter() - t0, 1)}
            print(f"{k:<8} n={r.n} clean {r.clean_accuracy:.4f}; L2 PGD-20 (random start) "
                  + ", ".join(f"ε {e:g}: {a:.4f}" for e, a in r.robust_accuracy.items()), flush=True)

    ds = full.subset(per_class(torch.as_tensor(full.labels), args.n))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.as_tensor(ds.labels)
    targets = (y + 1 + torch.arange(len(y)) % 9) % 10  # never the label; every target used
    report["judge_clean"] = judged(judge, x, y)
    print(f"judge on the clean {x.shape[-1]} px images: top-1 {report['judge_clean']['top1']:.2f}, "
          f"top-5 {report['judge_clean']['top5']:.2f}", flush=True)
    adv, inv = {}, {}
    for k, m in models.items():
        t0 = time.perf_counter()
        res = attack(m, x, target=targets, norm="l2", eps=args.eps, steps=args.steps, early_stop=False,
                     seed=args.seed, progress=True)
        adv[k] = res.adversarial
        t1 = time.perf_counter()
        inv[k] = inversions(m, x, args.layer, args.invert_steps, args.seed, args.invert_start)
        t2 = time.perf_counter()
        report[k] = {"attack_success": res.success_rate(), "attack_judge_target": judged(judge, adv[k], targets),
                     "inversion_judge_source": judged(judge, inv[k], y),
                     "seconds": {"attack": round(t1 - t0, 1), "inversion": round(t2 - t1, 1)}}
        a, i = report[k]["attack_judge_target"], report[k]["inversion_judge_source"]
        print(f"{k:<8} attack: white-box success {res.success_rate():.2f}; judge sees the target top-1 "
              f"{a['top1']:.2f} top-5 {a['top5']:.2f} | inversion at {args.layer}: judge sees the source top-1 "
              f"{i['top1']:.2f} top-5 {i['top5']:.2f}", flush=True)
    if args.figure:
        figure(args.figure, models, judge, x, y, targets, adv, inv, args)
        report["figure"] = args.figure
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def figure(path, models, judge, x, y, targets, adv, inv, args) -> None:
    """Six examples: original, each model's targeted attack and inversion, titled with the judge's top-1."""
    from robustlens.plots import image_grid

    first = next(iter(models.values()))
    names = {c.index: c.name for c in imagenet_classes()}

    def says(img):
        return names[int(judge.probs(img[None]).argmax())].split(",")[0]

    imgs, titles = [], []
    for i in torch.linspace(0, len(y) - 1, 6).round().long().tolist():
        src, tgt = first.class_name(int(y[i])), first.class_name(int(targets[i]))
        imgs.append(x[i])
        titles.append(f"{src}\n(target {tgt})")
        for k in models:
            imgs += [adv[k][i], inv[k][i]]
            titles += [f"{k} attack\njudge: {says(adv[k][i])}", f"{k} inversion\njudge: {says(inv[k][i])}"]
    image_grid(imgs, titles, path, ncols=1 + 2 * len(models),
               suptitle=f"targeted L2 ε={args.eps:g} ({args.steps} steps) and {args.layer} inversions at "
                        f"{first.config.input_size} px; judge: {args.judge}")
    print(f"figure: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
