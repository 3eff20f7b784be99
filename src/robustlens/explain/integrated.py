"""Integrated Gradients (Sundararajan et al. 2017): (x − x') ⊙ ∫₀¹ ∂f_c/∂x (x' + α(x − x')) dα.

The integral is a quadrature Σ_k w_k g(α_k): Riemann rules (left, right, middle, trapezoid) or Gauss–Legendre.
All N·K interpolated images go through the model in chunks of ``batch_size`` (one forward/backward pass per
chunk) on the BatchNorm-folded, channels-last private copy (see :func:`robustlens.explain._core.gradient_model`);
f(x) and f(x') come from one extra forward pass without autograd. Where the copy starts with an affine map P
(normalisation and the first convolution, :mod:`robustlens.explain._affine`), the path is walked after it —
z_k = P(x') + α_k (P(x) − P(x')) — and Σ_k w_k ∇g(z_k) is pulled back through P once per image: the same
integral (float64: equal to 1e-12), without a pass through P per step. Completeness: Σ attributions = f(x) − f(x')
exactly for the exact integral; the quadrature's error is reported per image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import robustlens.explain._affine as _affine
from robustlens.checks import positive
from robustlens.errors import UserError
from robustlens.explain._core import (
    Attribution,
    TargetSpec,
    chunks,
    gradient_model,
    input_gradient,
    target_scores,
)
from robustlens.explain.gradients import GradientMethod
from robustlens.optim import speed

RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
BASELINES = ("black", "blur", "noise")


def quadrature(rule: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(nodes α_k (K,), weights w_k (K,)) on [0, 1] with Σ w_k = 1.

    Example:

    ```pycon
    >>> from robustlens.explain import quadrature
    >>> alphas, weights = quadrature("riemann_middle", 4)
    >>> alphas.tolist(), float(weights.sum())
    ([0.125, 0.375, 0.625, 0.875], 1.0)

    ```
    """
    k = int(steps)
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(k)                 # on [−1, 1]
        return torch.tensor(0.5 * (nodes + 1)), torch.tensor(0.5 * weights)
    if rule == "riemann_trapezoid":
        if k < 2:
            raise UserError("the trapezoid rule needs at least 2 steps")
        w = torch.full((k,), 1.0 / (k - 1), dtype=torch.float64)
        w[0] = w[-1] = 0.5 / (k - 1)
        return torch.linspace(0, 1, k, dtype=torch.float64), w
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}.get(rule)
    if offset is None:
        raise UserError(f"unknown integration rule {rule!r}; choose one of {', '.join(RULES)}")
    return (torch.arange(k, dtype=torch.float64) + offset) / k, torch.full((k,), 1.0 / k, dtype=torch.float64)


def make_baseline(x: torch.Tensor, baseline: str | torch.Tensor, *, blur_sigma: float = 5.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The baseline x' (N,C,H,W): ``"black"`` zeros, ``"blur"`` x under a Gaussian blur of ``blur_sigma``
    pixels, ``"noise"`` uniform noise in [0, 1], or a tensor broadcastable to x."""
    if isinstance(baseline, torch.Tensor):
        try:
            return torch.broadcast_to(baseline.to(x), x.shape).clone()
        except RuntimeError:
            raise UserError(f"baseline of shape {tuple(baseline.shape)} does not fit images {tuple(x.shape)}") from None
    if baseline == "black":
        return torch.zeros_like(x)
    if baseline == "noise":
        return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if baseline == "blur":
        return gaussian_blur(x, blur_sigma)
    raise UserError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)} or give a tensor")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N,C,H,W) images, σ in pixels, reflected borders."""
    radius = max(1, min(int(3 * sigma + 0.5), min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class IntegratedGradients(GradientMethod):
    """Integrated Gradients; ``attribute`` returns maps (N,C,H,W) and the completeness error (N,)."""

    name = "ig"

    def attribute(self, x: torch.Tensor, target: TargetSpec = None, *, steps: int = 50,
                  rule: str = "gausslegendre", baseline: str | torch.Tensor = "black",
                  generator: torch.Generator | None = None) -> Attribution:
        x, t = self._prepare(x, target)
        positive("steps", steps)
        nodes, weights = quadrature(rule, steps)
        base = make_baseline(x, baseline, generator=generator)
        maps, error = self._attribute(x, t, base, nodes, weights)
        info = {"steps": int(steps), "rule": rule, "baseline": baseline if isinstance(baseline, str) else "custom"}
        return Attribution(self.name, maps, t, completeness_error=error, info=info)

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor, base: torch.Tensor, nodes: torch.Tensor,
                   weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, k = x.shape[0], nodes.numel()
        alphas = nodes.to(x).view(1, k, 1, 1, 1)                              # (1,K,1,1,1)
        w = weights.to(x).view(1, k, 1, 1, 1)
        delta = x - base                                                     # (N,C,H,W)
        with gradient_model(self.model, x) as (run, cl):
            fmt = torch.channels_last if cl else torch.contiguous_format
            parts = _affine.split(run)
            if parts is None:                                                # the path in pixels
                total = self._path_sum(run, base, delta, targets, alphas, w, cl)
            else:                                                            # the path after the affine start
                with torch.inference_mode():
                    z = parts.prefix(speed.in_format(torch.cat([base, x]), fmt))
                z_base, z_delta = z[:n], z[n:] - z[:n]
                total = parts.pullback(speed.in_format(x, fmt),
                                       self._path_sum(parts.suffix, z_base, z_delta, targets, alphas, w, cl))
            with torch.inference_mode():
                ends = run(speed.in_format(torch.cat([x, base]), fmt)).float()   # (2N, classes)
        f = target_scores(ends, targets.repeat(2))
        maps = delta * total.contiguous()                                    # (N,C,H,W)
        error = maps.flatten(1).sum(1) - (f[:n] - f[n:])                     # (N,)
        return maps, error

    def _path_sum(self, run: torch.nn.Module, start: torch.Tensor, delta: torch.Tensor, targets: torch.Tensor,
                  alphas: torch.Tensor, w: torch.Tensor, cl: bool) -> torch.Tensor:
        """Σ_k w_k ∂f_c/∂p (start + α_k·delta) for each image, (N, …) like ``start``: all N·K points through
        ``run`` in chunks of ``batch_size`` (whole images per chunk, or each image's steps split)."""
        n, k = start.shape[0], alphas.shape[1]
        total = torch.zeros_like(start, memory_format=torch.contiguous_format)
        per_row = max(1, self.batch_size // k) if self.batch_size >= k else 0
        if per_row:
            for s in chunks(n, per_row):
                path = start[s].unsqueeze(1) + alphas * delta[s].unsqueeze(1)       # (n_s,K,…)
                g = input_gradient(run, path.flatten(0, 1), targets[s].repeat_interleave(k), channels_last=cl)[0]
                total[s] = (g.view(-1, k, *start.shape[1:]) * w).sum(1)
        else:
            for i in range(n):
                for s in chunks(k, self.batch_size):
                    path = start[i] + alphas[0, s] * delta[i]                       # (k_s,…)
                    g = input_gradient(run, path, targets[i].expand(path.shape[0]), channels_last=cl)[0]
                    total[i] += (g * w[0, s]).sum(0)
        return total
