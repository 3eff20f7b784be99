"""Does the robust model's gradient look more like the image? Standard vs adversarially trained Imagenette
ResNets (64 px): Spearman rank correlation and SSIM between |saliency| (Σ_c |∂f_y/∂x_c|, y the true label)
and the image's Sobel edge map, and the alignment |cos(x − x̄, ∇f_y)| of Etmann et al. 2019, on N Imagenette
val images (N/10 per class, the first in file-name order),
mean ± sd per model, the paired difference, and the figure.

    python benchmarks/explain_robust_vs_standard.py [--per-class 10] [--json-out F] [--figure F]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import SHARED, require  # noqa: E402

from robustlens.explain import robust_vs_standard  # noqa: E402
from robustlens.images import load_pil  # noqa: E402
from robustlens.models import DEFAULT_ROBUST_MODEL, create_model  # noqa: E402
from robustlens.models.counterparts import standard_for  # noqa: E402
from robustlens.models.preprocess import preprocess  # noqa: E402


def imagenette_val(model, per_class: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(images (N,3,S,S), labels (N,) in the model's label space, paths): ``per_class`` per wnid folder."""
    root = require(SHARED / "data" / "imagenette128" / "val")
    xs, ys, paths = [], [], []
    for wnid in model.class_wnids:
        files = sorted(f for f in (root / wnid).iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for f in files[:per_class]:
            xs.append(preprocess(load_pil(f), model.config))
            ys.append(model.class_wnids.index(wnid))
            paths.append(f"{wnid}/{f.name}")
    return torch.stack(xs), torch.tensor(ys), paths


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--standard", default=standard_for(DEFAULT_ROBUST_MODEL)[0])
    p.add_argument("--robust", default=DEFAULT_ROBUST_MODEL)
    p.add_argument("--per-class", type=int, default=10)
    p.add_argument("--json-out")
    p.add_argument("--figure", default="robust_vs_standard_saliency.png")
    args = p.parse_args()
    standard, robust = create_model(args.standard), create_model(args.robust)
    x, y, paths = imagenette_val(standard, args.per_class)
    with torch.no_grad():
        acc = {k: float((m(x).argmax(1) == y).float().mean()) for k, m in (("standard", standard), ("robust", robust))}
    report = robust_vs_standard([("standard", standard), ("robust", robust)], x, y, figure=args.figure, show=8)
    report = {"standard": standard.weights, "robust": robust.weights, "target": "true label",
              "clean_accuracy_on_these_images": acc, **report, "images": paths}
    for k in ("standard", "robust"):
        s = report["models"][k]
        print(f"{k:<8} Spearman(|saliency|, Sobel) {s['spearman']['mean']:.3f} ± {s['spearman']['sd']:.3f}   "
              f"SSIM {s['ssim']['mean']:.3f} ± {s['ssim']['sd']:.3f}", file=sys.stderr)
        c = s["cosine"]
        print(f"{'':<8} alignment |cos(x − x̄, ∇f)| {c['mean']:.4f} ± {c['sd']:.4f}", file=sys.stderr)
    for metric in ("spearman", "ssim", "cosine"):
        d = report[f"{metric}_robust_minus_standard"]
        print(f"{metric} robust − standard (paired): {d['mean']:.4f} ± {d['sd']:.4f}, higher on "
              f"{d['fraction_positive']:.0%} of the images", file=sys.stderr)
    print(json.dumps({k: v for k, v in report.items() if k != "images"}, default=str)[:2000])
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
