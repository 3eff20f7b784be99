"""FAB-T (Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive boundary attack").

Targeted at class t away from label y: at the iterate x_k, linearise f(x) = z_t(x) − z_y(x) (the target wins
where f ≥ 0): the decision boundary is approximated by the hyperplane {x : f(x_k) + ∇f·(x − x_k) = 0}. Project
both x_k and the original x₀ onto that hyperplane ∩ [0,1]ᵈ (minimal ‖·‖_p step, :func:`project_hyperplane`),
extrapolate each projection by η = 1.05, and mix them with weight α = min(‖d_k‖/(‖d_k‖ + ‖d_0‖), α_max = 0.1)
on the x₀ side (biasing towards small perturbations). When the new point reaches the target, it is recorded
if closer to x₀ than the best so far, and the iterate is pulled back to x₀ + β·(x − x₀), β = 0.9.

FAB needs its own loop (two projections and a mixing step, not one objective step), and it minimises the
distance rather than staying in a ball; an example counts as broken only when its best point is within ε.
The projection is computed by bisection on the one parameter of its KKT solution (exact to float rounding),
for L∞ and L2 (L1 is not implemented).
"""

from __future__ import annotations

import torch
from torch import nn

from robustlens.optim.threat import make_threat
from robustlens.robust.autoattack.apgd import over_targets

_BISECT = 25  # the bracket shrinks by 2^-25: float32 resolution


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(1)


def project_hyperplane(t: torch.Tensor, w: torch.Tensor, c: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest step d (‖d‖_p, p = ∞ or 2) with w·d = c and t + d ∈ [0,1]; all flat: t, w (N, D), c (N,).

    L∞: d(r) = clip(r·sign(w), −t, 1−t); L2: d(λ) = clip(λ·w, −t, 1−t): w·d grows monotonically in the
    parameter, so bisection finds where it equals c (with the sign of c folded into w). When even the whole
    box cannot reach c the step goes as far as it can (the box corner for L∞, the largest λ tried for L2)."""
    sign = torch.where(c >= 0, 1.0, -1.0)[:, None]
    w, c = w * sign, c.abs()
    lo_box, hi_box = -t, 1 - t
    direction = w.sign() if norm == "linf" else w

    def step(p: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(p[:, None] * direction, lo_box), hi_box)

    lo = torch.zeros_like(c)
    if norm == "linf":
        hi = torch.ones_like(c)
    else:
        hi = c / _dot(w, w).clamp_min(1e-30)  # the unclipped solution; grow until the clipped step reaches c
        for _ in range(30):
            short = _dot(w, step(hi)) < c
            if not bool(short.any()):
                break
            hi = torch.where(short, hi * 4, hi)
    for _ in range(_BISECT):
        mid = (lo + hi) / 2
        reach = _dot(w, step(mid)) >= c
        hi, lo = torch.where(reach, mid, hi), torch.where(reach, lo, mid)
    return step(hi) * (w != 0)


def _pnorm(d: torch.Tensor, norm: str) -> torch.Tensor:
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def _boundary_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor):
    """The logits (N,K) at x, f = z_t − z_y (N,) and its input gradient (N, ...)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        z = model(x).float()
        f = z.gather(1, t[:, None]).squeeze(1) - z.gather(1, y[:, None]).squeeze(1)
        g, = torch.autograd.grad(f.sum(), x)
    return z.detach(), f.detach(), g


def fab_targeted_run(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *, norm: str,
                     eps: float, steps: int = 100, alpha_max: float = 0.1, eta: float = 1.05,
                     beta: float = 0.9) -> torch.Tensor:
    """One FAB run towards targets ``t`` (N,) from x₀ (N,C,H,W) in [0,1]; returns the closest point found
    that the model assigns to ``t`` (x₀ itself where none was). Examples leave once within ``eps``.

    The pass that checks a new iterate also gives the next step's gradient there: only the iterates that
    reached the target (about one in eight on the adversarially trained LeNet-5) are pulled back towards x₀
    and need a pass of their own (one forward+backward per step and those, instead of a forward+backward
    and a forward)."""
    n = x0.shape[0]
    flat0 = x0.reshape(n, -1)
    best = x0.clone()
    best_dist = torch.full((n,), float("inf"), device=x0.device)
    x = x0.clone()
    idx = torch.arange(n, device=x0.device)
    _, f, g = _boundary_gradient(model, x, y, t)
    for _ in range(steps):
        with torch.no_grad():
            w, xf, x0f = g.reshape(len(idx), -1), x.reshape(len(idx), -1), flat0[idx]
            m = len(idx)  # both projections in one batch: from the iterate and from x0
            d = project_hyperplane(torch.cat([xf, x0f]), torch.cat([w, w]), torch.cat([-f, -f + _dot(w, xf - x0f)]),
                                   norm)
            d1, d2 = d[:m], d[m:]
            a1, a2 = _pnorm(d1, norm).clamp_min(1e-8), _pnorm(d2, norm).clamp_min(1e-8)
            alpha = (a1 / (a1 + a2)).clamp(0, alpha_max)[:, None]
            xf = ((xf + eta * d1) * (1 - alpha) + (x0f + eta * d2) * alpha).clamp(0, 1)
            x = xf.view_as(x)
        z, f, g = _boundary_gradient(model, x, y[idx], t[idx])
        with torch.no_grad():
            hit = z.argmax(1) == t[idx]
            dist = _pnorm(xf - x0f, norm)
            closer = hit & (dist < best_dist[idx])
            best[idx[closer]] = x[closer]
            best_dist[idx[closer]] = dist[closer]
            going = best_dist[idx] > eps
            back = (hit & going).nonzero().squeeze(1)
            if len(back):  # pulled back towards x0: their next gradient is taken there
                x = x.clone()
                x[back] = x0[idx[back]] + beta * (x[back] - x0[idx[back]])
                _, f[back], g[back] = _boundary_gradient(model, x[back], y[idx[back]], t[idx[back]])
            if not bool(going.all()):
                idx, x, f, g = idx[going], x[going], f[going], g[going]
            if len(idx) == 0:
                break
    return best


def fab_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf", eps: float,
          steps: int = 100, targets: int = 9) -> torch.Tensor:
    """FAB-T against each of the top ``targets`` wrong classes in turn, only on the examples still correctly
    classified within ε (:func:`~robustlens.robust.autoattack.apgd.over_targets`: small inputs run several
    targets in one batch; FAB has no random start, so each row runs as it would alone); ``x`` (N,C,H,W) in
    [0,1], ``y`` (N,). Returns candidates (N,C,H,W)."""
    if norm not in ("linf", "l2"):
        raise ValueError(f"FAB-T supports linf and l2, not {norm}")
    threat = make_threat(norm, eps)
    with torch.no_grad():
        logits = model(x).float()

    def run(xs: torch.Tensor, ys: torch.Tensor, ts: torch.Tensor, k: int) -> torch.Tensor:
        return fab_targeted_run(model, xs, ys, ts, norm=norm, eps=eps, steps=steps)

    def broke(cand: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return (model(cand).argmax(1) != ys) & threat.contains(cand, xs, tol=1e-6)

    return over_targets(x, y, logits, targets, run, broke)
