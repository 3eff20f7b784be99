"""robustlens.explain against the reference implementations on the same model and inputs: Captum's Saliency,
IntegratedGradients (same baseline, steps and rule; every Captum rule), NoiseTunnel SmoothGrad and
SmoothGrad² (the same noise draws: Captum's own ``torch.normal`` call replayed from the same seed), and
pytorch-grad-cam's GradCAM / GradCAM++ (whose maps are min-max scaled per image; ours are scaled the same way
for the comparison).

Relative difference, per image: max_i |ours_i − ref_i| / max_i |ref_i|; the figure reported is the maximum
over images, under two speed settings: ``plain`` (the model as it is, NCHW: the same maths as the
references) and ``fast`` (the defaults: BatchNorm folded into a private copy, channels-last; equal up to float
rounding, which can flip a ReLU at a degenerate input such as the all-black baseline). Target: ≤ 1e-4.
Two known differences are reported beside, not hidden: Captum's
``riemann_trapezoid`` weights sum to (n−1)/n (ours: the composite trapezoid rule, Σ = 1), so it is compared
after scaling ours by (n−1)/n; pytorch-grad-cam's GradCAM++ adds ε = 1e-6 to a denominator (compared with
and without the same ε). ``max_relative_difference`` covers the like-for-like comparisons.

    python benchmarks/explain_vs_references.py [--model imagenette_resnet_standard] [--n 4] [--json-out F]

Images: the first N NIPS-17 images (random images when ../shared is absent), at the model's input size.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from robustlens.explain import GradCAM, GradCAMPlusPlus, IntegratedGradients, Saliency, SmoothGrad
from robustlens.explain.cam import default_layer
from robustlens.explain.integrated import RULES
from robustlens.models.layers import resolve_layer
from robustlens.optim import speed


def rel_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max over images of max_i |ours − ref| / max_i |ref| (tensors (N, ...))."""
    ours, ref = ours.detach().double().flatten(1), torch.as_tensor(ref).detach().double().flatten(1)
    return float(((ours - ref).abs().amax(1) / ref.abs().amax(1).clamp_min(1e-30)).max())


def minmax(m: torch.Tensor) -> torch.Tensor:
    """(N,H,W) maps scaled to [0, 1] per image. pytorch-grad-cam scales its small map, resizes it, and scales
    again, each time dividing by (1e-7 + max); after the first scaling the max is ~1, so its result is the
    plain min-max scaling of the resized map to ~1e-7 (scaling ours with its ε at the raw scale would not be)."""
    m = m.double()
    m = m - m.flatten(1).amin(1).view(-1, 1, 1)
    return m / m.flatten(1).amax(1).clamp_min(1e-30).view(-1, 1, 1)


def vs_captum(model: nn.Module, x: torch.Tensor, t: torch.Tensor, *, steps: int = 16, samples: int = 8,
              sigma: float = 0.1, seed: int = 0) -> dict[str, float]:
    """Max relative differences to Captum (keys: saliency, ig_<rule> for each rule and baseline, smoothgrad,
    smoothgrad_sq)."""
    from captum.attr import IntegratedGradients as CIG
    from captum.attr import NoiseTunnel
    from captum.attr import Saliency as CSaliency

    out = {"saliency": rel_diff(Saliency(model).attribute(x, t).maps,
                                CSaliency(model).attribute(x, target=t, abs=False))}
    for rule in RULES:
        for base in ("black", "blur"):
            ours = IntegratedGradients(model).attribute(x, t, steps=steps, rule=rule, baseline=base)
            from robustlens.explain.integrated import make_baseline

            ref, delta = CIG(model).attribute(x, baselines=make_baseline(x, base), target=t, n_steps=steps,
                                              method=rule, return_convergence_delta=True)
            key = f"ig_{rule}_{base}"
            if rule == "riemann_trapezoid":   # Captum: weights 1/n, ends halved, over linspace(0, 1, n): Σ = (n−1)/n
                out[f"{key}_as_is"] = rel_diff(ours.maps, ref)
                out[f"{key}_completeness_error_ours_vs_captum"] = [
                    float(ours.completeness_error.abs().max()), float(delta.abs().max())]
                out[f"{key}_times_(n-1)/n"] = rel_diff(ours.maps * (steps - 1) / steps, ref)
            else:
                out[key] = rel_diff(ours.maps, ref)
                out[f"{key}_completeness_error_abs_diff"] = float(
                    (ours.completeness_error.double() - delta.double()).abs().max())
    n, shape = x.shape[0], x.shape[1:]
    for squared, nt in ((False, "smoothgrad"), (True, "smoothgrad_sq")):
        torch.manual_seed(seed)                              # Captum's draw: normal(0, σ) of shape (N·S, C, H, W),
        noise = torch.normal(0, torch.tensor(sigma).repeat((n * samples, *shape)))   # image-major
        torch.manual_seed(seed)
        ref = NoiseTunnel(CSaliency(model)).attribute(x, nt_type=nt, nt_samples=samples, stdevs=sigma, target=t,
                                                      abs=False)
        ours = SmoothGrad(model).attribute(x, t, noise=noise.view(n, samples, *shape), squared=squared)
        out[nt] = rel_diff(ours.maps, ref)
    return out


def vs_grad_cam(model: nn.Module, x: torch.Tensor, t: torch.Tensor, layer: str | None = None) -> dict[str, float]:
    """Max relative differences to pytorch-grad-cam's GradCAM and GradCAM++ (min-max scaled maps). Its
    GradCAM++ adds 1e-6 to the denominator of a_ij; ``gradcampp`` is ours as published (no ε),
    ``gradcampp_eps_1e-6`` ours with the same ε."""
    from pytorch_grad_cam import GradCAM as RefCAM
    from pytorch_grad_cam import GradCAMPlusPlus as RefCAMPP
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = layer or default_layer(model, x)
    out = {}
    cases = (("gradcam", GradCAM(model, layer), RefCAM), ("gradcampp", GradCAMPlusPlus(model, layer), RefCAMPP),
             ("gradcampp_eps_1e-6", GradCAMPlusPlus(model, layer, eps=1e-6), RefCAMPP))
    for name, method, ref_cls in cases:
        ours = minmax(method.attribute(x, t).maps[:, 0])
        with ref_cls(model=model, target_layers=[resolve_layer(model, layer)]) as cam:
            ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])
        out[name] = rel_diff(ours, torch.from_numpy(ref))
    return out


def main() -> int:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _shared import SHARED, nips17_rows

    from robustlens.images import load_pil
    from robustlens.models import create_model
    from robustlens.models.preprocess import preprocess

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="imagenette_resnet_standard")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--json-out")
    args = p.parse_args()
    model = create_model(args.model)
    if (SHARED / "data" / "nips17").exists():
        x = torch.stack([preprocess(load_pil(r[0]), model.config) for r in nips17_rows(limit=args.n)])
    else:
        size = model.config.input_size
        x = torch.rand(args.n, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        t = model(x).argmax(1)
    report: dict = {"model": args.model, "n": args.n, "steps": args.steps, "targets": t.tolist()}
    for label, settings in (("plain", speed.PLAIN), ("fast", speed.FAST)):
        with speed.use(settings):
            r = {"captum": vs_captum(model, x, t, steps=args.steps), "pytorch_grad_cam": vs_grad_cam(model, x, t)}
        diffs = {f"{k}/{m}": v for k in r for m, v in r[k].items()
                 if not any(s in m for s in ("completeness", "_as_is")) and m != "gradcampp"}
        worst = max(diffs, key=diffs.__getitem__)
        report[label] = {**r, "max_relative_difference": diffs[worst], "worst": worst,
                         "all_within_1e-4": diffs[worst] <= 1e-4}
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
