"""Integrated Gradients speed: robustlens vs Captum, side by side in one process, same model, images, baseline,
steps and rule, and the same result (max relative difference of the maps reported per Captum run).

Default: EfficientNet-Lite0 (the project default), 8 NIPS-17 images at 224 px, 50 Gauss–Legendre steps, black
baseline; Captum's ``internal_batch_size`` at several values; robustlens at its default settings (the private
fx copy: BatchNorm folded, "same" padding inlined, conv+ReLU6 fused; channels-last; gradients summed after the
affine stem) with a few chunk sizes, and the same without the copy (``fold_bn=False``: channels-last only).
Every float32 result moves from the float64 IG by ~1e-2 of its maximum (ReLU6 kinks flip with rounding), so
each row reports its distance to the float64 ground truth: an earlier run under load put the folded copy
further from it than Captum (L2 5.7e-3 vs 1.2e-3, 2 images, 10 steps; docs/explain.md), session 6's idle run
closer (1.4e-3 vs 2.4e-3, 8 images, 50 steps).
Timing: ``_timing.interleaved`` (median over repeats, rotating order). Compare ratios, and only from a quiet
machine.

    python benchmarks/explain_ig_speed.py [--n 8] [--steps 50] [--repeats 3] [--threads N] [--json-out F]
    python benchmarks/explain_ig_speed.py --n 2 --steps 10 --repeats 1    # a quick check that it runs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, machine, median, say, set_threads, table, write_json  # noqa: E402,I001  (before torch)

import torch  # noqa: E402
from _shared import nips17_rows  # noqa: E402

from robustlens.explain import IntegratedGradients  # noqa: E402
from robustlens.images import load_pil  # noqa: E402
from robustlens.models import DEFAULT_MODEL, create_model  # noqa: E402
from robustlens.models.preprocess import preprocess  # noqa: E402
from robustlens.optim import speed  # noqa: E402


def rel_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max over images of max_i |ours − ref| / max_i |ref|."""
    a, b = ours.double().flatten(1), ref.detach().double().flatten(1)
    return float(((a - b).abs().amax(1) / b.abs().amax(1).clamp_min(1e-30)).max())


def l2_rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max over images of ‖ours − ref‖₂ / ‖ref‖₂."""
    a, b = ours.double().flatten(1), ref.detach().double().flatten(1)
    return float(((a - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-30)).max())


def float64_reference(model, x, t, steps: int, rule: str) -> torch.Tensor:
    """The same IG in float64 on a plain (unfolded, NCHW) copy of the model: the ground truth both float32
    implementations are judged against (on EfficientNet-Lite0 any change of float32 kernels — channels-last,
    folding, another batch size — moves input gradients by ~1e-3 of their maximum: ReLU6 kinks flip)."""
    import copy

    from robustlens.optim import speed

    with speed.use(speed.PLAIN):
        ig = IntegratedGradients(copy.deepcopy(model).double(), batch_size=25)
        return ig.attribute(x.double(), t, steps=steps, rule=rule).maps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rule", default="gausslegendre")
    p.add_argument("--captum-batches", default="50,100",
                   help="Captum internal_batch_size values (200 ran out of the 24 GB here: 400 images' activations)")
    p.add_argument("--ours-batches", default="50,100,200", help="robustlens chunk sizes (batch_size)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int)
    p.add_argument("--no-f64", dest="f64", action="store_false", help="skip the float64 ground truth")
    p.add_argument("--json-out")
    args = p.parse_args()
    from captum.attr import IntegratedGradients as CaptumIG

    threads = set_threads(args.threads)
    model = create_model(args.model)
    x = torch.stack([preprocess(load_pil(r[0]), model.config) for r in nips17_rows(limit=args.n)])
    with torch.no_grad():
        t = model(x).argmax(1)
    base = torch.zeros_like(x)
    cases = {}
    no_fold = speed.Speed(fold_bn=False)
    for b in (int(v) for v in args.ours_batches.split(",")):
        ig = IntegratedGradients(model, batch_size=b)
        cases[f"robustlens batch {b}"] = lambda ig=ig: ig.attribute(x, t, steps=args.steps, rule=args.rule).maps

        def unfolded(ig=ig):
            with speed.use(no_fold):
                return ig.attribute(x, t, steps=args.steps, rule=args.rule).maps

        cases[f"robustlens batch {b} no BN folding"] = unfolded
    for b in (int(v) for v in args.captum_batches.split(",")):
        cig = CaptumIG(model)
        cases[f"captum internal_batch_size {b}"] = lambda cig=cig, b=b: cig.attribute(
            x, baselines=base, target=t, n_steps=args.steps, method=args.rule, internal_batch_size=b)
    times, results = interleaved(cases, repeats=args.repeats, log=lambda s: say(s, quiet=True))
    ours = [k for k in cases if k.startswith("robustlens") and "no BN" not in k]
    best_ours = min(ours, key=lambda k: median(times[k]))
    truth = float64_reference(model, x, t, args.steps, args.rule) if args.f64 else None
    rows = []
    for k in cases:
        row = {"case": k, "median_s": median(times[k]), "s_per_image_step": median(times[k]) / (args.n * args.steps),
               "speedup_of_best_robustlens": median(times[k]) / median(times[best_ours]),
               "max_rel_diff_vs_best_robustlens": rel_diff(results[best_ours], results[k]),
               "l2_rel_diff_vs_best_robustlens": l2_rel(results[best_ours], results[k])}
        if truth is not None:
            row |= {"max_rel_diff_vs_float64": rel_diff(results[k], truth),
                    "l2_rel_diff_vs_float64": l2_rel(results[k], truth)}
        rows.append(row)
    captum_rows = [r for r in rows if r["case"].startswith("captum")]
    fastest_captum = min(captum_rows, key=lambda r: r["median_s"])
    unfolded = min((k for k in cases if "no BN" in k), key=lambda k: median(times[k]))
    report = {"machine": machine(), "threads": threads, "model": args.model, "n": args.n, "steps": args.steps,
              "rule": args.rule, "repeats": args.repeats, "rows": rows, "best_robustlens": best_ours,
              "ratio_vs_fastest_captum": fastest_captum["median_s"] / median(times[best_ours]),
              "ratio_vs_fastest_captum_no_bn_folding": fastest_captum["median_s"] / median(times[unfolded]),
              "max_rel_diff_vs_captum": max(r["max_rel_diff_vs_best_robustlens"] for r in captum_rows)}
    say(table(rows, [("case", "case", ""), ("median_s", "median s", ".2f"),
                     ("speedup_of_best_robustlens", "x slower than best robustlens", ".2f"),
                     ("max_rel_diff_vs_best_robustlens", "max rel diff", ".1e"),
                     ("max_rel_diff_vs_float64", "max rel diff vs f64", ".1e"),
                     ("l2_rel_diff_vs_float64", "L2 rel diff vs f64", ".1e")]), quiet=True)
    say(f"robustlens ({best_ours}) is {report['ratio_vs_fastest_captum']:.2f}x faster than the fastest Captum "
        f"({fastest_captum['case']}); max relative difference {report['max_rel_diff_vs_captum']:.1e}", quiet=True)
    print(json.dumps(report, indent=2))
    write_json(report, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
