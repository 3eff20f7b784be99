"""`robustlens compare`: the same attack and inversions on several models, side by side in one figure."""

from __future__ import annotations

import argparse

from robustlens.checks import count, positive, vacuous_eps
from robustlens.cli.common import (
    add_max_pixels_arg,
    add_output_args,
    device_of,
    emit,
    number,
    prepare_out,
    warn,
    write_json,
)
from robustlens.errors import UserError
from robustlens.images import load_pil


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="same attack and inversions on two models (e.g. standard vs robust), side by side",
        description="Run one attack (targeted with --target, else untargeted) and the feature inversions at each "
                    "--layer on every model of --models, and draw them side by side; each model's adversarial "
                    "image is also classified by the other models. On an adversarially robust model a large-eps "
                    "targeted attack adds visible features of the target class.")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--models", required=True,
                   help="comma-separated model names, each optionally NAME=WEIGHTS "
                        "(e.g. imagenette128_resnet18_standard,imagenette128_resnet18_robust)")
    p.add_argument("--target", metavar="CLASS", help="target class (name, wnid, or index); default: untargeted")
    p.add_argument("--layer", action="append", default=[], metavar="LAYER",
                   help="invert the features of this layer (repeatable; default: the two deepest of the first "
                        "model's default inversion layers, layer3 and layer4 for a ResNet, when every model has "
                        "them, else no inversion)")
    p.add_argument("--norm", default="l2", choices=["linf", "l2", "l1"], help="threat model (default l2)")
    p.add_argument("--eps", type=number, default=10.0, help="attack radius in [0,1] pixel units (default 10, L2)")
    p.add_argument("--steps", type=int, default=100, help="attack steps (default 100, no early stop)")
    p.add_argument("--step-size", type=number, help="attack step (default 2.5*eps/steps)")
    p.add_argument("--invert-steps", type=int, default=200, help="inversion steps (default 200)")
    p.add_argument("--invert-lr", type=number, default=0.05, help="inversion Adam learning rate (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed for random init and inversion noise (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    add_max_pixels_arg(p)
    add_output_args(p)
    p.set_defaults(run=run)


def parse_models(text: str) -> list[tuple[str, str | None]]:
    """``"a,b=PATH"`` -> [("a", None), ("b", "PATH")]."""
    items = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, weights = part.partition("=")
        items.append((name.strip(), weights.strip() if sep else None))
    if len(items) < 2:
        raise UserError(f"--models {text!r}: give at least two models, comma-separated")
    return items


def default_layers(models) -> list[str]:
    """The two deepest of the first model's default inversion layers
    (:func:`robustlens.models.layers.default_inversion_layers`: layer3 and layer4 for a ResNet) when every
    model has them, else none (no inversion)."""
    from robustlens.models.layers import default_inversion_layers, layer_names

    try:
        names = default_inversion_layers(models[0])[-2:]
    except UserError:
        return []
    common = set.intersection(*(set(layer_names(m)) for m in models))
    return list(names) if all(n in common for n in names) else []


def _check_numbers(args: argparse.Namespace) -> None:
    count("--steps", args.steps)
    count("--invert-steps", args.invert_steps)
    positive("--eps", args.eps, allow_zero=True)
    positive("--step-size", args.step_size)
    positive("--invert-lr", args.invert_lr)


def _load_models(args: argparse.Namespace, specs: list[tuple[str, str | None]]) -> list:
    """The models of ``specs`` (name, weights) on the device, renamed ``NAME#i`` when a name repeats."""
    from robustlens.models import create_model

    device = device_of(args)
    models = [create_model(n, w, seed=args.seed).to(device) for n, w in specs]
    if len({m.name for m in models}) < len(models):
        for i, m in enumerate(models):
            m.name = f"{m.name}#{i}"
    return models


def _summary(runs) -> list[str]:
    """Human-readable lines: each model's attack outcome, what the others see, the inversion distances."""
    lines = []
    for r in runs:
        a = r.attack
        goal = f"target {r.target_name}" if r.target is not None else "untargeted"
        lines.append(f"{r.name}: {a.before[0][0].name} -> {a.after[0][0].name} (p={a.after[0][0].prob:.3f}; {goal}, "
                     f"{'success' if bool(a.success[0]) else 'failed'}, L2 {float(a.l2[0]):.2f})")
        for other, v in r.transfer.items():
            lines.append(f"   seen by {other}: {v['top1_name']} (p={v['top1_prob']:.3f})")
        if r.inversion is not None:
            lines.append("   inversion relative feature distance: " + ", ".join(
                f"{n} {float(d):.3f}" for n, d in zip(r.inversion.layers, r.inversion.distance)))
    return lines


def _write_figures(args: argparse.Namespace, runs, out) -> list[str]:
    """compare.png, each model's adversarial image and inversions; returns the file names."""
    from robustlens.images import save_image
    from robustlens.robust.compare import plot_comparison

    files = [plot_comparison(runs, out / "compare.png",
                             title=f"{args.norm} eps={args.eps:g}, {args.steps} steps"
                                   + (f", target {args.target}" if args.target else "")).name]
    for i, r in enumerate(runs):
        stem = f"{i}_{r.name}"
        files.append(save_image(r.attack.adversarial[0], out / f"{stem}_adversarial.png").name)
        if r.inversion is not None:
            for layer, img in zip(r.inversion.layers, r.inversion.images):
                files.append(save_image(img, out / f"{stem}_inverted_{layer}.png").name)
    return files


def run(args: argparse.Namespace) -> int:
    import sys

    from robustlens.models.layers import resolve_layer
    from robustlens.robust.compare import check_same_target, compare_models

    _check_numbers(args)
    specs = parse_models(args.models)
    image = load_pil(args.image)
    models = _load_models(args, specs)
    layers = args.layer or default_layers(models)
    for m in models:
        for layer in layers:
            resolve_layer(m, layer)
    if args.target is not None:
        check_same_target(models, args.target)
    cfg = models[0].config
    notes = warn(vacuous_eps(args.norm, args.eps, (cfg.channels, cfg.input_size, cfg.input_size)))
    out = prepare_out(args.out)
    progress = not args.json and sys.stderr.isatty()
    runs = compare_models(models, image, target=args.target, norm=args.norm, eps=args.eps, steps=args.steps,
                          step_size=args.step_size, layers=layers, invert_steps=args.invert_steps,
                          invert_lr=args.invert_lr, seed=args.seed, progress=progress)
    result = {"image": str(args.image), "target": args.target, "layers": layers,
              "models": [r.to_dict() for r in runs], "notes": notes}
    lines = _summary(runs)
    if out:
        result["files"] = _write_figures(args, runs, out)
        write_json(result, out / "result.json")
        lines.append(f"figure compare.png and result.json in {args.out}")
    emit(result, args, "\n".join(lines))
    return 0
