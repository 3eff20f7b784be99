"""`robustlens dream`: DeepDream on an image at one layer, over octaves.

Writes (with ``--out``): ``original.png``, ``dream.png``, ``comparison.png`` and ``result.json``.
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
from robustlens.plots import image_grid
from robustlens.recipes.dream import check_octaves, dream


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dream", help="DeepDream: amplify what a layer sees in an image",
                       description="Gradient ascent on the squared activations of --layer, over an image pyramid "
                                   "(octaves), with random jitter.")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--layer", required=True, help="layer name (see `robustlens layers`)")
    p.add_argument("--octaves", type=int, default=4, help="image scales (default 4)")
    p.add_argument("--octave-scale", type=number, default=1.4, help="size ratio between octaves (default 1.4)")
    p.add_argument("--steps", type=int, default=10, help="steps per octave (default 10)")
    p.add_argument("--step-size", type=number, default=0.01, help="mean pixel change per step (default 0.01)")
    p.add_argument("--jitter", type=int, default=16, help="random shift in pixels at full size (default 16)")
    add_optimisation_args(p, run)


def run(args: argparse.Namespace) -> int:
    check_positive("--octaves", args.octaves)
    check_positive("--steps", args.steps)
    check_positive("--step-size", args.step_size)
    check_positive("--jitter", args.jitter, allow_zero=True)
    if args.octave_scale < 1:
        from robustlens.errors import UserError

        raise UserError(f"--octave-scale must be >= 1, got {args.octave_scale:g}")
    model = load_model(args)
    resolve_layer(model, args.layer)
    x = load_inputs([args.image], model)
    check_octaves(x.shape[-2], x.shape[-1], args.octaves, args.octave_scale)
    out = prepare_out(args.out)

    res = dream(model, x, args.layer, octaves=args.octaves, octave_scale=args.octave_scale, steps=args.steps,
                step_size=args.step_size, jitter_pixels=args.jitter, seed=args.seed, progress=progress_enabled(args))
    result = {**model.describe(), "image": str(args.image), **res.to_dict()}
    lines = [f"{model.name}: dreamed {args.image} at {args.layer}, {args.octaves} octave(s) "
             f"{' -> '.join(f'{h}x{w}' for h, w in res.octave_sizes)}, {args.steps} steps each, {res.seconds:.1f} s"]
    if out:
        result["files"] = [save_image(res.original[0], out / "original.png").name,
                           save_image(res.image[0], out / "dream.png").name,
                           image_grid([res.original[0], res.image[0]], ["original", f"dream at {args.layer}"],
                                      out / "comparison.png").name]
        write_json(result, out / "result.json")
        lines.append(f"images and result.json in {args.out}")
    emit(result, args, "\n".join(lines))
    return 0
