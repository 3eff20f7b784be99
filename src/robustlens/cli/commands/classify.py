"""`robustlens classify`: top-k classes with logits and probabilities, and their bar plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from robustlens.cli.common import (
    add_model_args,
    add_output_args,
    emit,
    load_inputs,
    load_model,
    prepare_out,
    write_json,
)
from robustlens.models.classify import classify
from robustlens.plots import plot_topk


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="top-k classes of images, with bar plots",
                       description="Classify images: top-k logits and probabilities (stable softmax).")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_model_args(p)
    p.add_argument("--topk", type=int, default=5, help="how many classes (default 5)")
    add_output_args(p)
    p.set_defaults(run=run)


def figure_stems(paths: list[str]) -> list[str]:
    """Unique file stems for per-image figures."""
    stems = [Path(p).stem for p in paths]
    return stems if len(set(stems)) == len(stems) else [f"{i:03d}_{s}" for i, s in enumerate(stems)]


def run(args: argparse.Namespace) -> int:
    model = load_model(args)
    x = load_inputs(args.images, model)
    if args.topk < 1:
        from robustlens.errors import UserError

        raise UserError("--topk must be at least 1")
    out = prepare_out(args.out)
    preds = classify(model, x, args.topk)
    result = {**model.describe(), "images": []}
    lines = [f"{model.name} ({model.weights})"]
    for path, stem, ps in zip(args.images, figure_stems(args.images), preds):
        entry = {"path": str(path), "topk": [p.to_dict() for p in ps]}
        if out:
            entry["figures"] = [
                plot_topk(ps, out / f"{stem}_logits.png", value="logit", title=f"{stem}: top-{len(ps)} logits").name,
                plot_topk(ps, out / f"{stem}_probs.png", value="prob", title=f"{stem}: top-{len(ps)} probabilities").name,
            ]
        result["images"].append(entry)
        lines.append(f"{path}:")
        lines += [f"  {p.index:>4}  {p.name:<32} logit {p.logit:8.3f}  prob {p.prob:.4f}" for p in ps]
    if out:
        write_json(result, out / "result.json")
        lines.append(f"figures and result.json in {args.out}")
    emit(result, args, "\n".join(lines))
    return 0
