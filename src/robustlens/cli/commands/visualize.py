"""`robustlens visualize`: an image that maximises a channel ("layer:channel").

Writes (with ``--out``): ``visualization.png`` (``visualization_<i>.png`` with ``--batch``), ``loss.png`` and
``result.json``.
"""

from __future__ import annotations

import argparse

from robustlens.cli.common import (
    add_optimisation_args,
    check_positive,
    emit,
    load_model,
    number,
    prepare_out,
    progress_enabled,
    write_json,
)
from robustlens.images import check_size, save_image
from robustlens.optim.objectives import parse_channel
from robustlens.optim.param import PARAMS
from robustlens.plots import plot_curves
from robustlens.recipes.visualize import check_objective, visualize


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("visualize", help="feature visualisation: the image a channel responds to most",
                       description="Adam on an FFT (or pixel) parameterised image with decorrelated colour, under "
                                   "random jitter, zoom and rotation, maximising the mean activation of a channel.")
    p.add_argument("--objective", required=True, metavar="LAYER:CHANNEL", help="e.g. _blocks.10:12")
    p.add_argument("--param", choices=PARAMS, default="fft", help="parameterisation (default fft)")
    p.add_argument("--no-decorrelate", action="store_true", help="optimise RGB directly")
    p.add_argument("--no-transforms", action="store_true", help="no random jitter/zoom/rotation")
    p.add_argument("--steps", type=int, default=256, help="Adam steps (default 256)")
    p.add_argument("--lr", type=number, default=0.05, help="Adam learning rate (default 0.05)")
    p.add_argument("--size", type=int, default=None, help="image size (default: the model's input size)")
    p.add_argument("--batch", type=int, default=1, help="images from different random starts (default 1)")
    add_optimisation_args(p, run)


def run(args: argparse.Namespace) -> int:
    check_positive("--steps", args.steps)
    check_positive("--lr", args.lr)
    check_positive("--batch", args.batch)
    check_positive("--size", args.size)
    if args.size is not None:
        check_size((args.size, args.size), "--size")
    parse_channel(args.objective)
    model = load_model(args)
    from robustlens.optim.objectives import as_objective

    check_objective(model, as_objective(args.objective), args.size or model.config.input_size)
    out = prepare_out(args.out)

    res = visualize(model, args.objective, param=args.param, decorrelate=not args.no_decorrelate, size=args.size,
                    batch=args.batch, steps=args.steps, lr=args.lr, transforms=not args.no_transforms,
                    seed=args.seed, progress=progress_enabled(args))
    result = {**model.describe(), **res.to_dict()}
    lines = [f"{model.name}: {args.objective}, {args.param} parameterisation, {args.steps} steps, {res.seconds:.1f} s",
             *(f"  image {i}: mean activation {float(s):.3f} (start) -> {float(v):.3f}"
               for i, (s, v) in enumerate(zip(res.start_value, res.value)))]
    if out:
        several = res.images.shape[0] > 1
        files = [save_image(img, out / f"visualization{f'_{i}' if several else ''}.png").name
                 for i, img in enumerate(res.images)]
        files.append(plot_curves({"objective (mean, minimised)": [h["loss"] for h in res.history]}, out / "loss.png",
                                 title=f"feature visualisation {args.objective}").name)
        result["files"] = files
        write_json(result, out / "result.json")
        lines.append(f"images and result.json in {args.out}")
    emit(result, args, "\n".join(lines))
    return 0
