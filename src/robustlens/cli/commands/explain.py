"""`robustlens explain`: attribution maps (what the model looks at), faithfulness curves, sanity checks."""

from __future__ import annotations

import argparse

from robustlens.cli.common import (
    add_output_args,
    add_speed_args,
    emit,
    number,
    prepare_out,
    progress_enabled,
    speed_from_args,
    write_json,
)
from robustlens.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from robustlens.explain.integrated import BASELINES, RULES

    p = sub.add_parser(
        "explain", help="attribution maps: saliency, SmoothGrad, Integrated Gradients, Grad-CAM; sanity checks",
        description="What does the model look at? Attribution maps of the target class (default: each model's "
                    "top-1) on every model of --models, one grid per image (rows model x method; absolute, "
                    "signed and overlaid maps), deletion/insertion AUCs, and with --sanity the model-"
                    "randomisation sanity checks (Adebayo et al. 2018).")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--models", default=None,
                   help="comma-separated model names, each optionally NAME=WEIGHTS (default: the default model)")
    p.add_argument("--method", default="saliency,gradxinput,smoothgrad,ig,gradcam,gradcampp",
                   help="comma-separated: saliency, gradxinput, smoothgrad, ig, gradcam, gradcampp, "
                        "guided_backprop, or all (default: all but guided_backprop)")
    p.add_argument("--target", metavar="CLASS", help="class to explain (index, wnid or name; default: top-1)")
    p.add_argument("--layer", help="Grad-CAM layer (default: the model's last convolutional block)")
    p.add_argument("--steps", type=int, default=50, help="Integrated Gradients steps (default 50)")
    p.add_argument("--rule", choices=RULES, default="gausslegendre", help="IG quadrature (default gausslegendre)")
    p.add_argument("--baseline", choices=BASELINES, default="black", help="IG baseline (default black)")
    p.add_argument("--samples", type=int, default=25, help="SmoothGrad samples (default 25)")
    p.add_argument("--sigma", type=number, default=0.15,
                   help="SmoothGrad noise, fraction of the image's value range (default 0.15)")
    p.add_argument("--percentile", type=number, default=99.0, help="clip maps at this percentile (default 99)")
    p.add_argument("--sanity", action="store_true", help="run the cascading/independent randomisation checks")
    p.add_argument("--sanity-stages", type=int, default=8, help="randomisation stages (default 8)")
    p.add_argument("--no-faithfulness", dest="faithfulness", action="store_false",
                   help="skip the deletion/insertion curves")
    p.add_argument("--seed", type=int, default=0, help="seed for noise draws (default 0)")
    add_speed_args(p)
    add_output_args(p)
    p.set_defaults(run=run)


def _check(args: argparse.Namespace) -> None:
    for name in ("steps", "samples", "sanity_stages"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.sigma < 0:
        raise UserError("--sigma must be >= 0")
    if not 0 < args.percentile <= 100:
        raise UserError("--percentile must be in (0, 100]")


def _human(result: dict) -> str:
    lines = []
    for m in result["models"]:
        targets = ", ".join(f"{t['index']} {t['name']}" for t in m["targets"])
        lines.append(f"{m['model']}: explaining {targets}")
        for name, d in m["methods"].items():
            extra = ""
            if "completeness_error" in d:
                extra = "  completeness error " + ", ".join(f"{e:+.3g}" for e in d["completeness_error"])
            f = m["faithfulness"].get(name)
            if f:
                extra += f"  deletion AUC {f['mean_deletion_auc']:.3f} insertion AUC {f['mean_insertion_auc']:.3f}"
            lines.append(f"  {name:<16}{extra}")
        if "sanity" in m:
            lines.append("  sanity (cascading randomisation, mean Spearman over the cascade): " + ", ".join(
                f"{k} {v:.2f} {m['sanity']['verdict'][k]}" for k, v in m["sanity"]["cascade_mean_spearman"].items()))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    from robustlens.explain.api import explain
    from robustlens.explain.methods import parse_methods

    _check(args)
    parse_methods(args.method)
    torch.manual_seed(args.seed)
    with speed_from_args(args):
        res = explain(args.images, models=args.models, methods=args.method, target=args.target,
                      sanity=args.sanity, faithfulness=args.faithfulness, sanity_stages=args.sanity_stages,
                      out=args.out, percentile=args.percentile, progress=progress_enabled(args),
                      layer=args.layer, steps=args.steps, rule=args.rule, baseline=args.baseline,
                      samples=args.samples, sigma=args.sigma, generator=torch.Generator().manual_seed(args.seed))
    result = res.to_dict()
    human = _human(result)
    if args.out:
        out = prepare_out(args.out)
        write_json(result, out / "result.json")
        human += f"\nfigures and result.json in {out}"
    emit(result, args, human)
    return 0
