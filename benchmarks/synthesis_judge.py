"""Santurkar et al. 2019 synthesis tasks, robust vs standard model, judged by an independent ImageNet classifier.

The judge is the bundled EfficientNet-Lite0 (``create_model()``, 1000 ImageNet classes) on the images
upsampled to 224 px (bicubic); Imagenette label k is ImageNet class ``IMAGENETTE_WNIDS[k]``. Both models get the
same seeds, inputs, masks, targets and settings (the published ones scaled to the input size).

- generate: SAMPLES × 10 classes; fraction whose judge top-5 holds the class, judge top-1, and an
  Inception-Score-style figure exp(E_x KL(p(y|x) ‖ p(y))) over the judge's 1000 classes (also for the seeds
  and for real val images, as the floor and the ceiling);
- inpaint / superres: N val images; judge top-1 / top-5 accuracy on the result vs on the mean-filled /
  nearest-upsampled input, PSNR to the original (inpaint: also inside the hole);
- translate: N val images, each towards a random other class; fraction the judge puts the target top-1/top-5.

    PYTHONPATH=src python benchmarks/synthesis_judge.py --out docs/results/synthesis_judge.json \\
        --figures docs/figures
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _judge import Judge
from _shared import SHARED, require

from robustlens import metrics
from robustlens.models import DEFAULT_ROBUST_MODEL, create_model
from robustlens.models.counterparts import standard_for
from robustlens.recipes.synthesis import (
    class_gaussians,
    downsample,
    generate,
    inpaint,
    random_box_masks,
    super_resolve,
    translate,
)
from robustlens.recipes.synthesis.figures import comparison_figure
from robustlens.robust.datasets import open_dataset, preload


def run_generate(models, judge, seeds, args) -> dict:
    out = {"samples_per_class": args.samples}
    classes = list(range(10))
    labels = torch.tensor(classes).repeat_interleave(args.samples)
    results = {}
    for key, model in models.items():
        res = generate(model, seeds, classes, samples=args.samples, seed=args.seed, progress=args.progress)
        results[key] = res
        out[key] = {**judge.scores(res.images, labels), "model_success": float(res.success.float().mean()),
                    "seconds": res.seconds, "settings": res.settings}
    out["seeds"] = judge.scores(next(iter(results.values())).starts, labels)
    for key, res in results.items():  # each model's samples classified by the other model of the pair
        other = next(k for k in models if k != key)
        with torch.inference_mode():
            pred = models[other](res.images).argmax(1).cpu()
        out[key][f"{other}_model_top1"] = float((pred == labels).float().mean())
    return {"result": out, "figure": results}


def run_inpaint(models, judge, x, y, args) -> dict:
    masks = random_box_masks(len(x), x.shape[-1], generator=torch.Generator().manual_seed(args.seed))
    out, results = {}, {}
    for key, model in models.items():
        res = inpaint(model, x, masks, labels=y, seed=args.seed, progress=args.progress)
        results[key] = res
        hole = masks.expand_as(x).bool()
        inside = [float(metrics.psnr(res.images[i][hole[i]][None], x[i][hole[i]][None])) for i in range(len(x))]
        out[key] = {**judge.scores(res.images, y), "psnr_db": float(metrics.psnr(res.images, x).mean()),
                    "psnr_hole_db": sum(inside) / len(inside), "model_accuracy": float(res.success.float().mean()),
                    "max_outside_change_255": float((res.images - x).abs().mul(1 - masks).amax()) * 255,
                    "seconds": res.seconds, "settings": res.settings}
        if "input" not in out:
            out["input"] = {**judge.scores(res.starts, y), "psnr_db": float(metrics.psnr(res.starts, x).mean())}
    return {"result": out, "figure": results}


def run_superres(models, judge, x, y, args) -> dict:
    low = downsample(x, args.factor)
    out, results = {"factor": args.factor}, {}
    for key, model in models.items():
        res = super_resolve(model, low, labels=y, seed=args.seed, progress=args.progress)
        results[key] = res
        out[key] = {**judge.scores(res.images, y), "psnr_db": float(metrics.psnr(res.images, x).mean()),
                    "model_accuracy": float(res.success.float().mean()), "seconds": res.seconds,
                    "settings": res.settings}
        if "input" not in out:
            out["input"] = {**judge.scores(res.starts, y), "psnr_db": float(metrics.psnr(res.starts, x).mean())}
    bicubic = F.interpolate(low, size=x.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
    out["bicubic"] = {**judge.scores(bicubic, y), "psnr_db": float(metrics.psnr(bicubic, x).mean())}
    return {"result": out, "figure": results}


def run_translate(models, judge, x, y, args) -> dict:
    gen = torch.Generator().manual_seed(args.seed)
    targets = (y + torch.randint(1, 10, (len(y),), generator=gen)) % 10  # a random other class
    out, results = {}, {}
    for key, model in models.items():
        res = translate(model, x, targets, seed=args.seed, progress=args.progress)
        results[key] = res
        s = judge.scores(res.images, targets)
        out[key] = {"target_top1": s["top1"], "target_top5": s["top5"], "source_top1": judge.scores(res.images, y)["top1"],
                    "model_success": float(res.success.float().mean()), "seconds": res.seconds,
                    "settings": res.settings}
    out["input"] = {"target_top1": judge.scores(x, targets)["top1"], "source_top1": judge.scores(x, y)["top1"]}
    return {"result": out, "figure": results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--robust", default=DEFAULT_ROBUST_MODEL)
    ap.add_argument("--standard", default=standard_for(DEFAULT_ROBUST_MODEL)[0])
    ap.add_argument("--train", default=str(SHARED / "data" / "imagenette128" / "train"))
    ap.add_argument("--val", default=str(SHARED / "data" / "imagenette128" / "val"))
    ap.add_argument("--samples", type=int, default=10, help="generated images per class (default 10)")
    ap.add_argument("--n", type=int, default=50, help="val images for inpaint / superres / translate (default 50)")
    ap.add_argument("--factor", type=int, default=4, help="super-resolution factor (default 4)")
    ap.add_argument("--tasks", default="generate,inpaint,superres,translate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON file for the results (tasks already in it and not run now "
                                                "are kept)")
    ap.add_argument("--figures", default=None, help="folder for synthesis_<task>.png")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    require(Path(args.train))
    require(Path(args.val))
    models = {"robust": create_model(args.robust), "standard": create_model(args.standard)}
    first = models["robust"]
    judge = Judge(first.class_wnids)
    val = open_dataset(f"folder:{args.val}", first, limit=args.n)
    pixels, y = preload(val)
    x = pixels.float() / 255.0
    report: dict = {"models": {k: m.describe() for k, m in models.items()}, "judge": judge.model.name,
                    "judge_upsampling": f"bicubic to {judge.size} px", "seed": args.seed,
                    "val_images": len(x), "real_val": judge.scores(x, y), "threads": args.threads}
    t0 = time.perf_counter()
    for task in args.tasks.split(","):
        t = time.perf_counter()
        if task == "generate":
            done = run_generate(models, judge, class_gaussians(first, f"folder:{args.train}"), args)
        else:
            done = {"inpaint": run_inpaint, "superres": run_superres, "translate": run_translate}[task](
                models, judge, x, y, args)
        report[task] = {**done["result"], "wall_seconds": time.perf_counter() - t}
        print(task, json.dumps(done["result"], default=str)[:1500], flush=True)
        if args.figures:
            Path(args.figures).mkdir(parents=True, exist_ok=True)
            pick = [k * args.samples for k in range(10)] if task == "generate" else None  # one per class
            comparison_figure(done["figure"], Path(args.figures) / f"synthesis_{task}.png",
                              originals=None if task in ("generate", "translate") else x,
                              class_name=first.class_name, columns=10, pick=pick)
    report["wall_seconds"] = time.perf_counter() - t0
    text = json.dumps(report, indent=2, allow_nan=False)
    if args.out:  # tasks run before and not rerun now are kept
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            report = {**json.loads(path.read_text()), **report}
            text = json.dumps(report, indent=2, allow_nan=False)
        path.write_text(text + "\n")
    print(json.dumps({k: report[k] for k in ("real_val", "wall_seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
