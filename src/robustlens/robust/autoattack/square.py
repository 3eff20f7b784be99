"""Square Attack (Andriushchenko et al. 2020): random search with square-shaped updates, no gradients.

Only forward passes, all under ``torch.no_grad`` (it works on models that block gradients: that is its point
in AutoAttack, the check against gradient masking). Loss: the margin z_y − max_{i≠y} z_i, minimised; an
example stops once it is misclassified (margin ≤ 0). Each example draws its own square each iteration.

- L∞: start at x₀ + ε·(random ±1 vertical stripes, one sign per channel and column); each iteration set a
  random s×s window (all channels, one random ±2ε per channel) on top of the best point, clip to ball ∩ box,
  keep it if the margin drops. The window side follows the reference's schedule: the fraction of pixels
  changed p starts at ``p_init`` = 0.8 and halves at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000
  (as AutoAttack runs it: not rescaled to the 5000 queries) and s = round(√(p·H·W)).
- L2 (a simplified proposal, not the reference's pseudo-Gaussian windows): start at a random ±stripes
  perturbation of norm ε; each iteration replace one random window of the perturbation by a flat ±pattern
  (one sign per channel) carrying the window's old energy plus the share ε²·s²/(H·W), and project back onto
  ball ∩ box (exact projection).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from robustlens.optim.local import LocalEvaluator
from robustlens.optim.threat import make_threat
from robustlens.robust.autoattack.losses import margin

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def fraction(i: int, p_init: float = 0.8) -> float:
    """p at iteration ``i`` (the reference's piecewise-constant schedule, not rescaled to the query budget)."""
    return p_init / 2 ** sum(i > h for h in _HALVINGS)


def _windows(n: int, h: int, w: int, s: int, gen: torch.Generator, device) -> tuple[torch.Tensor, ...]:
    """(n, 1, h, w) bool masks, each an s×s square at a random position of its own; its (top, left) (n,)."""
    top = torch.randint(0, h - s + 1, (n, 1, 1, 1), generator=gen, device=device)
    left = torch.randint(0, w - s + 1, (n, 1, 1, 1), generator=gen, device=device)
    rows = torch.arange(h, device=device).view(1, 1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, 1, w)
    mask = (rows >= top) & (rows < top + s) & (cols >= left) & (cols < left + s)
    return mask, top.view(-1), left.view(-1)


def _signs(shape: tuple[int, ...], gen: torch.Generator, device) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen, device=device).float() * 2 - 1


def _proposal(xb: torch.Tensor, x0: torch.Tensor, eps: float, norm: str, p: float, gen,
              threat) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, int]]:
    """New candidates (m,C,H,W) from the best points ``xb`` around ``x0``, and the changed window's (top, left)
    (m,) and side (L∞ changes nothing outside it; L2's projection may rescale everything)."""
    m, c, h, w = xb.shape
    s = min(max(int(round(math.sqrt(p * h * w))), 1), h - 1)
    mask, top, left = _windows(m, h, w, s, gen, xb.device)
    if norm == "linf":
        cand = torch.where(mask, xb + 2 * eps * _signs((m, c, 1, 1), gen, xb.device), xb)
        return threat.project(cand, x0), (top, left, s)
    delta = xb - x0
    old = (delta * mask).flatten(1).norm(dim=1)
    energy = (old.pow(2) + eps ** 2 * s * s / (h * w)).sqrt()
    pattern = mask * _signs((m, c, 1, 1), gen, xb.device)
    pattern = pattern / pattern.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    cand = torch.where(mask, pattern * energy.view(-1, 1, 1, 1), delta)
    return threat.project(x0 + cand, x0), (top, left, s)


def _init(x0: torch.Tensor, eps: float, norm: str, gen, threat) -> torch.Tensor:
    n, c, h, w = x0.shape
    stripes = _signs((n, c, 1, w), gen, x0.device).expand(n, c, h, w)
    if norm == "l2":
        stripes = stripes * eps / math.sqrt(c * h * w)
        return threat.project(x0 + stripes, x0)
    return threat.project(x0 + eps * stripes, x0)


@torch.no_grad()
def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf", eps: float,
           queries: int = 5000, p_init: float = 0.8, seed: int = 0,
           evaluator: LocalEvaluator | None | Literal["auto"] = "auto") -> torch.Tensor:
    """Square Attack; ``x`` (N,C,H,W) in [0,1], ``y`` (N,) labels, ``eps`` in pixel units, ``queries``
    iterations (one forward pass of the examples still correctly classified each). Returns (N,C,H,W).

    ``evaluator`` (L∞ only): a :class:`~robustlens.optim.local.LocalEvaluator` of ``model``, with which a query
    recomputes only the part of each layer that its window changed (the same margins up to float rounding);
    ``"auto"`` builds one where the model is such a chain of convolutions, pooling and element-wise layers (then
    anything), None runs ``model`` on whole images."""
    if norm not in ("linf", "l2"):
        raise ValueError(f"Square supports linf and l2, not {norm}")
    if x.dim() != 4:
        raise ValueError(f"Square needs images (N,C,H,W), got shape {tuple(x.shape)}")
    threat = make_threat(norm, eps)
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    if evaluator == "auto":
        evaluator = LocalEvaluator.build(model, x[:1]) if norm == "linf" else None
    elif evaluator is not None and norm != "linf":
        raise ValueError("a LocalEvaluator needs L∞ proposals (L2's projection changes the whole image)")
    best = _init(x, eps, norm, gen, threat)
    best_margin = margin(evaluator.reset(best) if evaluator else model(best), y)
    clean_ok = margin(model(x), y) > 0
    best = torch.where((~clean_ok).view(-1, 1, 1, 1), x, best)  # already misclassified: nothing to do
    best_margin = torch.where(clean_ok, best_margin, torch.zeros_like(best_margin))
    live = (best_margin > 0).nonzero().squeeze(1)   # the examples still attacked, and their working copies
    xb, x0, yb, mb = best[live], x[live], y[live], best_margin[live]
    if evaluator is not None:
        evaluator.keep(live)
    for i in range(queries):
        if len(live) == 0:
            break
        cand, (top, left, s) = _proposal(xb, x0, eps, norm, fraction(i, p_init), gen, threat)
        m = margin(evaluator.try_window(cand, top, left, s) if evaluator is not None else model(cand), yb)
        better = m < mb
        if evaluator is not None:
            evaluator.commit(better)
        xb = torch.where(better.view(-1, 1, 1, 1), cand, xb)
        mb = torch.where(better, m, mb)
        done = mb <= 0
        if bool(done.any()):   # misclassified: it leaves
            best[live] = xb
            going = (~done).nonzero().squeeze(1)
            live, xb, x0, yb, mb = live[going], xb[going], x0[going], yb[going], mb[going]
            if evaluator is not None:
                evaluator.keep(going)
    best[live] = xb
    return best
