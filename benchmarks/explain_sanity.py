"""Model-randomisation sanity checks (Adebayo et al. 2018) on the default model: cascading (from the top) and
independent randomisation, Spearman rank correlation and SSIM of the absolute maps per stage, a pass/fail
verdict per method (mean Spearman over the cascade < threshold), and the figure.

    python benchmarks/explain_sanity.py [--model efficientnet_lite0] [--n 4] [--stages 10] [--json-out F] [--figure F]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import nips17_rows  # noqa: E402

from robustlens.explain import plot_sanity, sanity_check  # noqa: E402
from robustlens.images import load_pil  # noqa: E402
from robustlens.models import DEFAULT_MODEL, create_model  # noqa: E402
from robustlens.models.preprocess import preprocess  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--n", type=int, default=4, help="NIPS-17 images (default 4)")
    p.add_argument("--stages", type=int, default=10, help="randomisation stages (default 10)")
    p.add_argument("--methods", default="saliency,gradxinput,smoothgrad,ig,gradcam,gradcampp,guided_backprop")
    p.add_argument("--steps", type=int, default=16, help="IG steps (default 16)")
    p.add_argument("--samples", type=int, default=10, help="SmoothGrad samples (default 10)")
    p.add_argument("--threshold", type=float, default=0.5, help="verdict: cascade-mean Spearman below this")
    p.add_argument("--json-out")
    p.add_argument("--figure", default="sanity.png")
    args = p.parse_args()
    torch.manual_seed(0)
    model = create_model(args.model)
    x = torch.stack([preprocess(load_pil(r[0]), model.config) for r in nips17_rows(limit=args.n)])
    res = sanity_check(model, x, methods=args.methods, stages=args.stages, threshold=args.threshold,
                       steps=args.steps, samples=args.samples, progress=True,
                       generator=torch.Generator().manual_seed(0))
    plot_sanity(res, args.figure, title=f"{args.model}: model-randomisation sanity check, {args.n} NIPS-17 images")
    report = {"model": args.model, "n": args.n, "ig_steps": args.steps, "smoothgrad_samples": args.samples,
              **res.to_dict(), "per_image_spearman": res.spearman, "per_image_ssim": res.ssim}
    for m in res.methods:
        casc = report["mean_spearman"]["cascading"][m]
        print(f"{m:<16} {report['verdict'][m]:<5} cascading Spearman top→bottom: "
              + " ".join(f"{v:.2f}" for v in casc), file=sys.stderr)
    print(json.dumps({k: report[k] for k in ("model", "stages", "verdict", "cascade_mean_spearman", "final_spearman")}))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
