"""`robustlens attack`: targeted or untargeted adversarial example for one image, 8-bit safe.

Writes (with ``--out``): ``original.png`` and ``adversarial.png`` (``adversarial_<class>.png`` per target when
there are several), the perturbation amplified for viewing, top-5 probability plots before and after, the
loss curve, and ``result.json``.

The attack works on the model's input (the centre crop at model resolution). ``original.png`` and
``adversarial.png`` are the photo at the preprocessing's resize scale (short side ``resize_size``) with that
crop in its centre: the model's own preprocessing (``robustlens classify``) leaves such a file's size alone
and cuts out exactly the attacked pixels, so the PNG read back classifies as the attack reported (checked
after writing: ``reloaded`` in result.json). Where that round trip cannot be exact (e.g. one-channel models)
the model-resolution image is written instead, and ``result.json`` says so.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from robustlens.checks import vacuous_eps
from robustlens.cli.common import (
    add_optimisation_args,
    check_positive,
    emit,
    load_inputs,
    load_model,
    number,
    prepare_out,
    progress_enabled,
    warn,
    write_json,
)
from robustlens.images import save_image
from robustlens.models.classify import classify
from robustlens.models.labels import resolve_class
from robustlens.models.preprocess import photo_with_crop
from robustlens.optim import speed
from robustlens.plots import amplified, plot_curves, plot_topk
from robustlens.recipes.attacks import LOSSES, attack

DEFAULT_EPS = {"linf": 4 / 255, "l2": 0.5, "l1": 10.0}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="adversarial example: make the model see a chosen class (or any other)",
                       description="PGD attack on one image (preprocessed to the model's input size). The result "
                                   "is rounded to 8-bit pixels inside the ε-ball and checked again, so the saved "
                                   "PNG classifies the same when read back.")
    p.add_argument("image", metavar="IMAGE")
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument("--target", action="append", metavar="CLASS",
                      help="target class by index, wnid or name (repeat for several targets: one batch)")
    goal.add_argument("--untargeted", action="store_true", help="move away from the model's clean prediction")
    p.add_argument("--norm", choices=sorted(DEFAULT_EPS), default="linf", help="threat model (default linf)")
    p.add_argument("--eps", type=number, default=None,
                   help="radius in [0,1] pixel units, e.g. 4/255 (default: 4/255 linf, 0.5 l2, 10 l1)")
    p.add_argument("--step-size", type=number, default=None, help="default 2.5*eps/steps")
    p.add_argument("--steps", type=int, default=50, help="at most this many steps; stops at success (default 50)")
    p.add_argument("--restarts", type=int, default=1, help="random restarts (default 1)")
    p.add_argument("--random-start", action="store_true", help="start at a random point of the ε-ball")
    p.add_argument("--loss", choices=LOSSES, default="ce",
                   help="attack loss: ce (cross-entropy towards the target / away from the label; default) or cw")
    p.add_argument("--no-quantize", action="store_true", help="keep float pixels (the PNG may then differ)")
    add_optimisation_args(p, run, early_stop=True)


def run(args: argparse.Namespace) -> int:
    eps = DEFAULT_EPS[args.norm] if args.eps is None else args.eps
    check_positive("--eps", eps, allow_zero=True)
    check_positive("--steps", args.steps)
    check_positive("--restarts", args.restarts)
    check_positive("--step-size", args.step_size)
    model = load_model(args)
    x = load_inputs([args.image], model)
    targets = None
    if args.target:
        targets = list(dict.fromkeys(resolve_class(t, model.num_classes) for t in args.target))
    notes = warn(vacuous_eps(args.norm, eps, tuple(x.shape[1:])))
    out = prepare_out(args.out)

    res = attack(model, x, target=targets, norm=args.norm, eps=eps, step_size=args.step_size, steps=args.steps,
                 restarts=args.restarts, random_start=args.random_start, loss=args.loss,
                 quantize=not args.no_quantize, early_stop=args.early_stop, seed=args.seed,
                 progress=progress_enabled(args))
    result = {**model.describe(), "image": str(args.image), "speed": speed.current().to_dict(), **res.to_dict(),
              "notes": notes}
    name = model.class_name
    before = res.before[0][0]
    lines = [f"{model.name}: {args.image} is {before.name} ({before.index}), p={before.prob:.3f}",
             f"{'targeted' if res.targeted else 'untargeted'} {args.norm} attack, eps={eps:.4g} "
             f"({eps * 255:.2f}/255), step {res.settings['step_size']:.4g}, at most {args.steps} steps"]
    for i, row in enumerate(result["results"]):
        top = res.after[i][0]
        goal = f"target {row['target']} ({name(row['target'])})" if res.targeted else f"away from {row['label']}"
        lines.append(f"  {goal}: {'SUCCESS' if row['success'] else 'failed'}; now {top.name} ({top.index}) "
                     f"p={top.prob:.3f}; Linf {row['linf_255']:.2f}/255, L2 {row['l2']:.3f}, "
                     f"PSNR {'inf' if row['psnr_db'] is None else round(row['psnr_db'], 1)} dB, "
                     f"SSIM {row['ssim']:.4f}")
    lines.append(f"{res.steps_run} steps, {res.seconds:.1f} s")
    if out:
        images, result["reloaded"] = _write_images(out, args, model, res, targets)
        result["files"] = images + _write_figures(out, res, targets)
        for r in result["reloaded"]:
            if r["top1"] is not None:
                lines.append(f"  {r['file']} read back: {r['name']} ({r['top1']}), p={r['prob']:.3f}")
        write_json(result, out / "result.json")
        lines.append(f"images, figures and result.json in {args.out}")
    else:
        lines.append("(use --out DIR to save the adversarial image and figures)")
    emit(result, args, "\n".join(lines))
    return 0


def _write_images(out: Path, args: argparse.Namespace, model, res, targets: list[int] | None) -> tuple[list, list]:
    """original/adversarial PNGs (see module docstring), each adversarial file read back and classified."""
    files, reloaded = [], []
    several = res.adversarial.shape[0] > 1
    original = photo_with_crop(args.image, model.config, res.original[0])
    files.append(save_image(original if original is not None else res.original[0], out / "original.png").name)
    for i in range(res.adversarial.shape[0]):
        tag = f"_{int(res.targets[i])}" if several else ""
        photo = photo_with_crop(args.image, model.config, res.adversarial[i]) if original is not None else None
        path = save_image(photo if photo is not None else res.adversarial[i], out / f"adversarial{tag}.png")
        files.append(path.name)
        if photo is not None:
            again = load_inputs([str(path)], model)
            top = classify(model, again, 1)[0][0]
            reloaded.append({"file": path.name, "top1": top.index, "name": top.name, "prob": top.prob,
                             "same_pixels": bool(torch.equal(again[0], res.adversarial[i].to(again.dtype)))})
        else:
            reloaded.append({"file": path.name, "top1": None, "note": "written at model resolution: the model's "
                             "preprocessing would resize it (classify it as a preprocessed input)"})
    return files, reloaded


def _write_figures(out: Path, res, targets: list[int] | None) -> list[str]:
    files = [plot_topk(res.before[0], out / "top5_before.png", title="before the attack: top-5",
                       highlight=targets[0] if targets and len(targets) == 1 else None).name]
    several = res.adversarial.shape[0] > 1
    for i in range(res.adversarial.shape[0]):
        tag = f"_{int(res.targets[i])}" if several else ""
        hl = int(res.targets[i]) if res.targets is not None else None
        files.append(save_image(amplified(res.perturbation[i])[0], out / f"perturbation{tag}.png").name)
        files.append(plot_topk(res.after[i], out / f"top5_after{tag}.png", highlight=hl,
                               title=f"after the attack{' on ' + str(hl) if hl is not None else ''}: top-5").name)
    if res.history:
        series: dict[str, Sequence[float]] = {"loss (mean over running rows)": [h["loss"] for h in res.history]}
        key = "target_prob" if res.targeted else "label_prob"
        if key in res.history[0]:
            series[key.replace("_", " ")] = [h[key] for h in res.history]
        files.append(plot_curves(series, out / "loss.png", title="attack progress").name)
    return files
