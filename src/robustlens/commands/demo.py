"""`robustlens demo`: the main job on the embedded default (a photo shipped in scikit-image, the bundled model)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..classify import classify
from ..images import example_image, save_image
from ..plots import plot_topk
from ..preprocess import preprocess
from ..zoo import create_model
from .common import emit, prepare_out, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on a bundled photo and model",
                       description="Classify scikit-image's `chelsea` photo with the bundled EfficientNet-Lite0 "
                                   "and write figures to --out.")
    p.add_argument("--out", default="robustlens-demo", help="output folder (default ./robustlens-demo)")
    p.add_argument("--image", default="chelsea", help="bundled example: chelsea, coffee, astronaut, rocket")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    img = example_image(args.image)
    model = create_model()
    x = preprocess(img, model.config).unsqueeze(0)
    out = prepare_out(args.out)
    preds = classify(model, x)[0]
    save_image(x[0], out / "input.png")
    plot_topk(preds, out / "top5_logits.png", value="logit")
    plot_topk(preds, out / "top5_probs.png", value="prob")
    result = {**model.describe(), "image": args.image, "topk": [p.to_dict() for p in preds], "out": str(out.resolve())}
    write_json(result, out / "result.json")
    best = preds[0]
    emit(result, args, f"{args.image}: {best.name} ({best.index}), p={best.prob:.3f}\n{Path(out).resolve()}")
    return 0
