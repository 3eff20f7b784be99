"""The project's Imagenette models, robust vs standard: accuracy, robust accuracy, and the perceptual test.

1. Clean and PGD-10 L2 robust accuracy (eps = the training eps, 1.0 at 64 px) of both models on the
   Imagenette val split (3925 images).
2. Perceptual test: for each of N val images and a target class != its label, a large-eps targeted L2 attack
   (default eps 8 at 64 px, i.e. about 16 at 128 px; 60 steps, no early stop) on each model. If the robust
   model's gradients are perceptually aligned, its adversarial images carry visible features of the target,
   so the *standard* model also classifies them as the target far more often than the robust model
   classifies the standard model's adversarial images as the target.
3. A figure: originals, the robust model's and the standard model's targeted adversarial images.

    python benchmarks/imagenette_perceptual.py [--n 200] [--eps 8] [--eval-limit N] [--json-out F] [--figure F]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _shared import SHARED, require

from robustlens.models import create_model
from robustlens.recipes.attacks import attack
from robustlens.robust.datasets import open_dataset
from robustlens.robust.evaluate import evaluate_robustness


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--robust", default="imagenette_resnet_robust", help="model (NAME or NAME=WEIGHTS)")
    p.add_argument("--standard", default="imagenette_resnet_standard", help="model (NAME or NAME=WEIGHTS)")
    p.add_argument("--n", type=int, default=200, help="images for the perceptual test (default 200)")
    p.add_argument("--eps", type=float, default=8.0, help="L2 radius of the targeted attacks (default 8, 64 px)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--train-eps", type=float, default=1.0, help="L2 eps for robust accuracy (default 1.0)")
    p.add_argument("--eval-limit", type=int, help="images for accuracy (default: all 3925 val images)")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--json-out")
    p.add_argument("--figure", help="PNG of examples (originals, robust and standard adversarials)")
    args = p.parse_args()
    torch.manual_seed(0)
    val = require(SHARED / "data" / "imagenette128" / "val")

    def load(spec: str):
        name, _, weights = spec.partition("=")
        return create_model(name, weights or None)

    robust, standard = load(args.robust), load(args.standard)
    report: dict = {"robust": robust.weights, "standard": standard.weights}
    if not args.skip_accuracy:
        ds = open_dataset(f"folder:{val}", robust, limit=args.eval_limit)
        for name, m in (("robust", robust), ("standard", standard)):
            r = evaluate_robustness(m, ds, norm="l2", eps=[0.25, 0.5, args.train_eps], steps=10, batch_size=100)
            report[f"{name}_accuracy"] = r.to_dict()
            print(f"{name:<8} n={r.n} clean {r.clean_accuracy:.4f}  L2 PGD-10 robust "
                  + ", ".join(f"eps {e:g}: {a:.4f}" for e, a in r.robust_accuracy.items()), flush=True)

    ds = open_dataset(f"folder:{val}", robust, limit=args.n)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = ds.labels
    targets = (y + 1 + torch.arange(len(y)) % 9) % 10  # a different class for every image, all targets used
    t0 = time.perf_counter()
    adv = {}
    for name, m in (("robust", robust), ("standard", standard)):
        res = attack(m, x, target=targets, norm="l2", eps=args.eps, steps=args.steps, early_stop=False,
                     progress=False)
        adv[name] = res.adversarial
        report[f"{name}_whitebox_success"] = res.success_rate()
    with torch.no_grad():
        std_sees = (standard(adv["robust"]).argmax(1) == targets).float().mean().item()
        rob_sees = (robust(adv["standard"]).argmax(1) == targets).float().mean().item()
    report.update({
        "n": len(y), "eps": args.eps, "steps": args.steps, "norm": "l2", "input_size": robust.config.input_size,
        "standard_classifies_robust_adversarial_as_target": std_sees,
        "robust_classifies_standard_adversarial_as_target": rob_sees,
        "seconds": round(time.perf_counter() - t0, 1),
    })
    print(f"perceptual test, n={len(y)}, targeted L2 eps={args.eps:g} ({args.steps} steps) at "
          f"{robust.config.input_size} px:")
    print(f"  white-box success: robust {report['robust_whitebox_success']:.3f}, "
          f"standard {report['standard_whitebox_success']:.3f}")
    print(f"  standard model sees the target in the robust model's adversarials: {std_sees:.3f}")
    print(f"  robust model sees the target in the standard model's adversarials: {rob_sees:.3f}")
    if args.figure:
        from robustlens.plots import image_grid

        picks = list(range(0, len(y), max(1, len(y) // 6)))[:6]
        imgs, titles = [], []
        for i in picks:
            t = int(targets[i])
            with torch.no_grad():
                sr = robust.class_name(int(robust(adv["robust"][i:i + 1]).argmax()))
                ss = standard.class_name(int(standard(adv["robust"][i:i + 1]).argmax()))
                ts = standard.class_name(int(standard(adv["standard"][i:i + 1]).argmax()))
            imgs += [x[i], adv["robust"][i], adv["standard"][i]]
            titles += [f"{robust.class_name(int(y[i]))}\n(target: {robust.class_name(t)})",
                       f"robust model's attack\nrobust: {sr}\nstandard: {ss}",
                       f"standard model's attack\nstandard: {ts}"]
        image_grid(imgs, titles, args.figure, ncols=6,
                   suptitle=f"targeted L2 eps={args.eps:g} at {robust.config.input_size} px")
        print(f"figure: {args.figure}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
