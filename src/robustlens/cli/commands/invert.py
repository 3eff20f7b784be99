"""`robustlens invert`: reconstruct an image from its features at one or more layers (all in one batch).

Writes (with ``--out``): ``inversion.png`` (the reference and every reconstruction side by side, titled with
the final relative feature distance), ``reconstruction_<layer>.png`` each, ``loss.png`` and ``result.json``.
"""

from __future__ import annotations

import argparse

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
from robustlens.images import save_image
from robustlens.models.layers import resolve_layer
from robustlens.plots import image_grid, plot_curves
from robustlens.recipes.inversion import STARTS, invert


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("invert", help="feature inversion: images the model cannot tell from IMAGE at a layer",
                       description="From random noise, minimise the relative L2 distance to IMAGE's features at "
                                   "each --layer (see `robustlens layers` for names). All layers run in one batch.")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--layer", action="append", required=True, metavar="LAYER", help="layer name (repeatable)")
    p.add_argument("--steps", type=int, default=200, help="Adam steps (default 200)")
    p.add_argument("--lr", type=number, default=0.1,
                   help="Adam learning rate in pixel units, cosine-decayed (default 0.1)")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                   help="learning-rate schedule (default cosine: decays to 0 at the last step)")
    p.add_argument("--tv", type=number, default=0.0, help="total-variation weight (default 0: none)")
    p.add_argument("--start", choices=list(STARTS), default="uniform",
                   help="the noise it starts from (default uniform: U(0,1) per pixel; gray: 0.5 + N(0, 0.05^2), the "
                        "seed of MadryLab robustness's inversion example, far less noise for a robust model to keep)")
    add_optimisation_args(p, run)


def run(args: argparse.Namespace) -> int:
    check_positive("--steps", args.steps)
    check_positive("--lr", args.lr)
    check_positive("--tv", args.tv, allow_zero=True)
    model = load_model(args)
    layers = list(dict.fromkeys(args.layer))
    for name in layers:
        resolve_layer(model, name)
    x = load_inputs([args.image], model)
    out = prepare_out(args.out)

    res = invert(model, x, layers, steps=args.steps, lr=args.lr, schedule=args.schedule, tv_weight=args.tv,
                 seed=args.seed, start=args.start, progress=progress_enabled(args))
    result = {**model.describe(), "image": str(args.image), **res.to_dict()}
    lines = [f"{model.name}: inverting {args.image} at {len(layers)} layer(s), {args.steps} steps, {res.seconds:.1f} s"]
    lines += [f"  {r['layer']:<20} relative feature distance {r['start_distance']:.3f} (noise) -> {r['distance']:.4f}"
              f"  ({r['drop']:.1%} lower)" for r in result["layers"]]
    if out:
        files = [image_grid([res.reference[0], *res.images],
                            ["reference", *(f"{n}\ndistance {float(d):.3f}" for n, d in zip(layers, res.distance))],
                            out / "inversion.png", suptitle=f"{model.name}: feature inversion").name]
        files += [save_image(img, out / f"reconstruction_{n}.png").name for n, img in zip(layers, res.images)]
        files.append(plot_curves({"relative squared feature distance (mean)": [h["loss"] for h in res.history]},
                                 out / "loss.png", logy=True, title="feature inversion").name)
        result["files"] = files
        write_json(result, out / "result.json")
        lines.append(f"figures and result.json in {args.out}")
    emit(result, args, "\n".join(lines))
    return 0
