"""`robustlens synthesize TASK`: image synthesis with one robust classifier (Santurkar et al. 2019).

Tasks: ``generate`` (class-conditional samples from seeds fitted to ``--data``), ``inpaint``, ``superres``,
``translate``, ``sketch``, ``paint``. Defaults are the published settings scaled to the model's input size
(see :mod:`robustlens.recipes.synthesis.tasks`); the default model is ``robustlens.models.DEFAULT_ROBUST_MODEL``.

Writes (with ``--out``): ``synthesis.png`` (starts above results), ``start_<i>.png`` and ``result_<i>.png``
per row, and ``result.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from robustlens.cli.common import (
    add_optimisation_args,
    check_positive,
    emit,
    load_inputs,
    load_model,
    number,
    prepare_out,
    progress_enabled,
    write_json,
)
from robustlens.errors import UserError
from robustlens.images import load_pil, pil_to_tensor, save_image
from robustlens.models import DEFAULT_ROBUST_MODEL
from robustlens.models.labels import resolve_class
from robustlens.models.layers import resolve_layer
from robustlens.optim.objectives import parse_channel
from robustlens.recipes import synthesis as syn
from robustlens.recipes.synthesis.figures import comparison_figure
from robustlens.recipes.synthesis.objectives import check_masks
from robustlens.robust.datasets import parse_data_spec

TASKS = {"generate": "class-conditional samples from Gaussian seeds fitted to --data",
         "inpaint": "fill a masked region so the image stays its class",
         "superres": "super-resolve images downsampled xFACTOR",
         "translate": "turn images of one class into another class",
         "sketch": "turn sketches into images of a class",
         "paint": "paint a feature (LAYER:CHANNEL) into a masked region"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synthesize", help="image synthesis with one robust classifier (Santurkar et al. 2019)",
                       description=__doc__.split("\n\n")[1])
    tasks = p.add_subparsers(dest="task", metavar="TASK", parser_class=type(p))
    for name, text in TASKS.items():
        t = tasks.add_parser(name, help=text, description=f"{text}. Defaults: the published settings scaled to the "
                                                           "model's input size (eps and step x sqrt(pixels)/224).")
        globals()[f"_args_{name}"](t)
        g = t.add_argument_group("optimisation (default: the published setting, scaled)")
        g.add_argument("--eps", type=number, default=None, help="L2 radius in pixel units")
        g.add_argument("--step-size", type=number, default=None, help="L2 step in pixel units")
        g.add_argument("--steps", type=int, default=None, help="PGD steps")
        add_optimisation_args(t, _runner(name))
        t.set_defaults(model=DEFAULT_ROBUST_MODEL)


def _runner(name: str):
    def run(args: argparse.Namespace) -> int:
        for opt in ("eps", "step_size"):
            check_positive(f"--{opt.replace('_', '-')}", getattr(args, opt))
        check_positive("--steps", args.steps)
        return _run(name, args)

    return run


# --- per-task options ---------------------------------------------------------------------------------------

def _class_option(p: argparse.ArgumentParser, flag: str, text: str, *, required: bool = False) -> None:
    p.add_argument(flag, action="append", metavar="CLASS", required=required,
                   help=f"{text}: index, wnid or name (repeatable: one per image)")


def _mask_options(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--mask", metavar="PNG", help=f"{what}: white pixels of a PNG (resized to the model's input)")
    g.add_argument("--box", metavar="TOP,LEFT,HEIGHT,WIDTH", help=f"{what}: a box in model-input pixels")


def _args_generate(p):
    p.add_argument("--data", metavar="SPEC",
                   help="training images to fit the seed Gaussians, e.g. folder:imagenette128/train (cached); "
                        "default for the Imagenette models: the seed statistics shipped with the package")
    _class_option(p, "--class", "classes to generate (default: every class)")
    p.add_argument("--samples", type=int, default=4, help="images per class (default 4)")
    p.add_argument("--limit", type=int, default=None, help="fit on at most this many images (default all)")


def _args_inpaint(p):
    p.add_argument("images", nargs="+", metavar="IMAGE")
    _mask_options(p, "the hole (default: a random box of side 60/224 of the image)")
    _class_option(p, "--class", "the class to keep (default: the model's top-1 on the mean-filled image)")
    p.add_argument("--weight", type=number, default=syn.tasks.INPAINT_WEIGHT,
                   help="weight of the mean squared change outside the hole (default 10)")
    p.add_argument("--no-paste", dest="paste", action="store_false",
                   help="keep the optimised pixels outside the hole (default: paste the input back there)")


def _args_superres(p):
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--factor", type=int, default=4, help="downsampling factor before super-resolution (default 4)")
    _class_option(p, "--class", "the class to push towards (default: the model's top-1 on the upsampled input)")


def _args_translate(p):
    p.add_argument("images", nargs="+", metavar="IMAGE")
    _class_option(p, "--target", "the class to translate to", required=True)


def _args_sketch(p):
    p.add_argument("images", nargs="+", metavar="SKETCH")
    _class_option(p, "--target", "the class to draw", required=True)


def _args_paint(p):
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--feature", action="append", required=True, metavar="LAYER:CHANNEL",
                   help="the unit to paint, e.g. layer4:12 (repeatable: one per image); see `robustlens layers`")
    _mask_options(p, "where to paint (default: the centre box of half the side)")


# --- inputs -------------------------------------------------------------------------------------------------

def resolve_model_class(model, text: str) -> int:
    """A class of ``model`` by index, or (for models over ImageNet classes) wnid or name."""
    wnids = getattr(model, "class_wnids", None)
    if wnids is None or text.strip().isdigit():
        return resolve_class(text, model.num_classes)
    q = text.strip().lower()
    hits = [k for k in range(model.num_classes) if q == wnids[k] or q in model.class_name(k).lower()]
    if len(hits) != 1:
        names = ", ".join(f"{k} {model.class_name(k)}" for k in range(model.num_classes))
        raise UserError(f"class {text!r} {'is ambiguous' if hits else 'is not a class of ' + model.name}; "
                        f"classes: {names}")
    return hits[0]


def _classes(model, texts: list[str] | None) -> list[int] | None:
    return None if not texts else [resolve_model_class(model, t) for t in texts]


def _masks(args: argparse.Namespace, size: int, n: int, default: str) -> torch.Tensor:
    if args.mask:
        img = load_pil(args.mask).resize((size, size))
        return (pil_to_tensor(img).mean(0, keepdim=True)[None] > 0.5).float()
    if args.box:
        parts = args.box.split(",")
        if len(parts) != 4 or not all(s.strip().isdigit() for s in parts):
            raise UserError(f"--box {args.box!r}: expected TOP,LEFT,HEIGHT,WIDTH (integers)")
        return syn.box_mask(size, *(int(s) for s in parts))
    if default == "random":
        return syn.random_box_masks(n, size, generator=torch.Generator().manual_seed(args.seed))
    q = size // 4
    return syn.box_mask(size, q, q, size - 2 * q, size - 2 * q)


def _count(what: str, given: list | None, n: int) -> None:
    if given is not None and len(given) not in (1, n):
        raise UserError(f"{len(given)} {what} for {n} images: give one, or one per image")


def _inputs(name: str, args: argparse.Namespace, model) -> dict:
    """Everything the task needs, checked before any work or output (UserError on bad input)."""
    size = int(model.config.input_size)
    if name == "generate":
        check_positive("--samples", args.samples)
        check_positive("--limit", args.limit)
        if args.data:
            parse_data_spec(args.data)
        elif syn.shipped_seeds(model) is None:
            raise UserError(f"{model.name} has no seed statistics in the package (only the Imagenette models do): "
                            "give --data folder:PATH with its training images to fit them")
        classes = _classes(model, getattr(args, "class")) or list(range(model.num_classes))
        return {"classes": list(dict.fromkeys(classes))}
    x = load_inputs(args.images, model)
    if name in ("inpaint", "paint"):
        masks = _masks(args, size, len(x), "random" if name == "inpaint" else "centre")
        check_masks(masks, x if masks.shape[0] == len(x) else x[:1])
    if name == "inpaint":
        labels = _classes(model, getattr(args, "class"))
        _count("classes", labels, len(x))
        return {"x": x, "masks": masks, "labels": labels}
    if name == "superres":
        check_positive("--factor", args.factor)
        labels = _classes(model, getattr(args, "class"))
        _count("classes", labels, len(x))
        return {"x": x, "low": syn.downsample(x, args.factor), "labels": labels}
    if name == "paint":
        _count("features", args.feature, len(x))
        for spec in args.feature:
            resolve_layer(model, parse_channel(spec)[0])
        return {"x": x, "masks": masks}
    targets = _classes(model, args.target)
    _count("targets", targets, len(x))
    return {"x": x, "targets": targets}


def _synthesise(name: str, args: argparse.Namespace, model, inp: dict):
    common = {"eps": args.eps, "step_size": args.step_size, "steps": args.steps, "seed": args.seed,
              "progress": progress_enabled(args)}
    if name == "generate":
        seeds = (syn.class_gaussians(model, args.data, limit=args.limit, progress=progress_enabled(args))
                 if args.data else syn.shipped_seeds(model))
        if seeds is None:  # refused in _inputs already
            raise UserError(f"{model.name}: give --data to fit seed statistics")
        return syn.generate(model, seeds, inp["classes"], samples=args.samples, **common)
    if name == "inpaint":
        return syn.inpaint(model, inp["x"], inp["masks"], labels=inp["labels"], weight=args.weight,
                           paste=args.paste, **common)
    if name == "superres":
        return syn.super_resolve(model, inp["low"], labels=inp["labels"], **common)
    if name == "paint":
        feats = args.feature[0] if len(args.feature) == 1 else args.feature
        return syn.paint_features(model, inp["x"], inp["masks"], feats, **common)
    fn = syn.translate if name == "translate" else syn.sketch_to_image
    return fn(model, inp["x"], inp["targets"], **common)


def _run(name: str, args: argparse.Namespace) -> int:
    model = load_model(args)
    inp = _inputs(name, args, model)
    out = prepare_out(args.out)
    res = _synthesise(name, args, model, inp)
    result = {**model.describe(), **res.to_dict()}
    rows = result["rows"]
    lines = [f"{model.name}: {name}, {len(rows)} image(s), eps {res.settings['eps']:.3g}, step "
             f"{res.settings['step_size']:.3g}, {res.settings['steps']} steps, {res.seconds:.1f} s"]
    for i, r in enumerate(rows):
        goal = f"target {model.class_name(r['target'])}: p={r['target_prob']:.3f}, " if "target" in r else ""
        painted = f", activation {r['activation_start']:.3g} -> {r['activation']:.3g}" if "activation" in r else ""
        lines.append(f"  [{i}] {goal}top-1 {model.class_name(r['predicted'])}, L2 change {r['l2']:.2f}{painted}")
        if painted and r["activation_start"] == 0 and r["activation"] == 0:
            lines.append("      the unit is 0 in the region, so it passes no gradient (ReLU): pick a unit that is "
                         "active there")
    if out:
        files = [comparison_figure({model.name: res}, out / "synthesis.png", columns=min(len(rows), 10),
                                   originals=inp.get("x") if name in ("inpaint", "superres") else None,
                                   class_name=model.class_name).name]
        for i in range(len(rows)):
            files.append(save_image(res.starts[i], out / f"start_{i}.png").name)
            files.append(save_image(res.images[i], out / f"result_{i}.png").name)
        result["files"] = files
        write_json(result, Path(out) / "result.json")
        lines.append(f"images and result.json in {out}")
    emit(result, args, "\n".join(lines))
    return 0


__all__ = ["add_parser", "resolve_model_class"]
