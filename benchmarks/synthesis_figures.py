"""Figures for the two synthesis tasks without a judged benchmark: sketch-to-image and paint-with-features,
robust vs standard model, same inputs and settings (the published ones scaled to the input size).

- sketch: one val image per class turned into a line drawing (Sobel edges, dark lines on white), each pushed
  towards its class;
- paint: val images with a centre box; in the box, each model paints the unit of ``--layer`` (default: the last
  stage) that its own classifier weighs most for class ``--paint-class`` (default 6, garbage truck).

    PYTHONPATH=src python benchmarks/synthesis_figures.py --figures docs/figures --out docs/results/synthesis_figures.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from _shared import SHARED, require

from robustlens.models import create_model
from robustlens.recipes.synthesis import box_mask, paint_features, sketch_to_image
from robustlens.recipes.synthesis.figures import comparison_figure
from robustlens.robust.datasets import open_dataset, preload


def line_drawing(x: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) in [0,1] -> a grey line drawing (N,3,H,W): 1 − normalised Sobel edge strength."""
    grey = x.mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3)
    gx, gy = F.conv2d(grey, kx, padding=1), F.conv2d(grey, kx.transpose(2, 3), padding=1)
    mag = (gx ** 2 + gy ** 2).sqrt()
    mag = mag / mag.flatten(1).quantile(0.98, dim=1).clamp_min(1e-6).view(-1, 1, 1, 1)
    return (1 - mag.clamp(0, 1)).expand(-1, 3, -1, -1).contiguous()


def strongest_unit(model, layer: str, cls: int) -> int:
    """The channel of ``layer`` (feeding the final linear layer through global pooling) with the largest weight
    for class ``cls``."""
    return int(model.net.fc.weight[cls].argmax())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--robust", default="imagenette_resnet_robust")
    ap.add_argument("--standard", default="imagenette_resnet_standard")
    ap.add_argument("--val", default=str(SHARED / "data" / "imagenette128" / "val"))
    ap.add_argument("--layer", default="layer4")
    ap.add_argument("--paint-class", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--figures", required=True)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    require(Path(args.val))
    models = {"robust": create_model(args.robust), "standard": create_model(args.standard)}
    first = models["robust"]
    pixels, y = preload(open_dataset(f"folder:{args.val}", first, limit=200))
    x = pixels.float() / 255.0
    per_class = torch.tensor([int((y == k).nonzero()[0]) for k in range(10)])  # one image per class
    sketches = line_drawing(x[per_class])
    size = int(first.config.input_size)
    q = size // 4
    mask = box_mask(size, q, q, size - 2 * q, size - 2 * q)
    painted_on = x[per_class[[0, 1, 4, 8]]]
    report: dict = {"sketch": {}, "paint": {"class": args.paint_class, "layer": args.layer}}
    sketch_res, paint_res = {}, {}
    for key, model in models.items():
        s = sketch_to_image(model, sketches, y[per_class], progress=False)
        sketch_res[key] = s
        report["sketch"][key] = {"model_success": float(s.success.float().mean()), "settings": s.settings}
        unit = f"{args.layer}:{strongest_unit(model, args.layer, args.paint_class)}"
        p = paint_features(model, painted_on, mask, unit, progress=False)
        paint_res[key] = p
        report["paint"][key] = {"unit": unit, "activation_start": p.extra["activation_start"].tolist(),
                                "activation": p.extra["activation"].tolist(),
                                "class_prob_after": torch.softmax(model(p.images), 1)[:, args.paint_class].tolist(),
                                "settings": p.settings}
    out = Path(args.figures)
    out.mkdir(parents=True, exist_ok=True)
    comparison_figure(sketch_res, out / "synthesis_sketch.png", class_name=first.class_name, columns=10)
    comparison_figure(paint_res, out / "synthesis_paint.png", class_name=first.class_name, columns=4,
                      title=f"paint: the {args.layer} unit each model weighs most for "
                            f"{first.class_name(args.paint_class)}, in the centre box")
    text = json.dumps(report, indent=2, allow_nan=False)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
