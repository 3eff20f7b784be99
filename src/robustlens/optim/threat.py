"""Threat models: the set an input may move in, ε-ball around x₀ intersected with the image box [0, 1].

Every threat model knows four things (the only norm-specific code in the project):

- ``random_start(x0, generator)``: a random point of the allowed set;
- ``ascent_direction(grad)``: the steepest-ascent direction of unit norm for a first-order step;
- ``project(x, x0)``: the exact Euclidean projection onto {‖x − x₀‖ ≤ ε} ∩ [0, 1]ᵈ, per example;
- ``norm(delta)``: ‖delta‖ per example, shape (N,).

ε and step sizes are in [0, 1] pixel units (the model's normalisation is inside the model). Tensors are
batches (N, C, H, W) (any (N, ...) works); every example has its own ball around its own x₀.

Projections onto ball ∩ box (L2 and L1) are exact. The common "project on the ball, then clip" stays feasible
(clipping towards a box that holds x₀ never lengthens a coordinate of x − x₀) but is not the nearest feasible
point: it shrinks the step more than needed. For both norms the KKT conditions give the projection as a
one-parameter family that is monotone in the parameter:

- L2: x(t) = clip(x₀ + t·(z − x₀), 0, 1), t ∈ [0, 1], and ‖x(t) − x₀‖₂ grows with t;
- L1: x(λ) = clip(x₀ + soft(z − x₀, λ), 0, 1), λ ≥ 0, and ‖x(λ) − x₀‖₁ shrinks as λ grows;

so a per-example search finds the parameter where the constraint is active (L2: an active-set iteration on
the pixels clipped at t, a few rounds, see ``_l2_scale``; L1: a bisection), and the point returned is on the
feasible side, so the constraint holds exactly (in floating point, as computed by :meth:`norm`).
"""

from __future__ import annotations

import math

import torch

from robustlens.optim._tensor import flat, per_example

_BISECTION_STEPS = 40  # brackets shrink by 2^-40: far below float32 resolution


class ThreatModel:
    """Base class; ``eps`` in pixel units (``math.inf`` for no ball)."""

    name = "none"
    eps: float = math.inf

    def random_start(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def ascent_direction(self, grad: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def project(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pull_back(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """A feasible point near ``x``: the exact projection unless a norm has a cheaper rule (L2: the
        training loops' radial scaling into the ball, then clipping into the box)."""
        return self.project(x, x0)

    def contains(self, x: torch.Tensor, x0: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
        """(N,) bool: x in [0, 1] and within ε of x₀, up to ``tol``."""
        in_box = (flat(x).amin(1) >= -tol) & (flat(x).amax(1) <= 1 + tol)
        return in_box & (self.norm(x - x0) <= self.eps + tol)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:g})"

    def to_dict(self) -> dict:
        return {"norm": self.name, "eps": None if math.isinf(self.eps) else self.eps}


def _check_eps(eps: float) -> float:
    eps = float(eps)
    if not eps >= 0 or math.isnan(eps):
        raise ValueError(f"eps must be >= 0, got {eps}")
    return eps


class Linf(ThreatModel):
    """‖x − x₀‖∞ ≤ ε: every pixel within ε; the ball ∩ box is itself a box, so everything is exact."""

    name = "linf"

    def __init__(self, eps: float):
        self.eps = _check_eps(eps)

    def random_start(self, x0, generator=None):
        lo, hi = (x0 - self.eps).clamp_(0, 1), (x0 + self.eps).clamp_(0, 1)
        u = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return lo + u * (hi - lo)  # uniform on ball ∩ box (a box)

    def ascent_direction(self, grad, x=None):
        return grad.sign()

    def project(self, x, x0):
        return torch.minimum(torch.maximum(x, x0 - self.eps), x0 + self.eps).clamp_(0, 1)

    def norm(self, delta):
        return flat(delta).abs().amax(1)


class L2(ThreatModel):
    """‖x − x₀‖₂ ≤ ε (over all C·H·W values). Projection onto ball ∩ box is exact (see module docstring)."""

    name = "l2"

    def __init__(self, eps: float):
        self.eps = _check_eps(eps)

    def random_start(self, x0, generator=None):
        """Uniform in the ball (Gaussian direction, radius ε·U^(1/d)), then projected onto ball ∩ box.

        Exactly uniform on ball ∩ box would need rejection sampling, whose acceptance rate is exponentially
        small in the number of saturated pixels; the projection keeps the start feasible and spread out."""
        n, d = x0.shape[0], x0[0].numel()
        g = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        u = torch.rand(n, generator=generator, device=x0.device, dtype=x0.dtype)
        radius = self.eps * u.pow(1.0 / d)
        g = g * per_example(radius / self.norm(g).clamp_min(1e-12), g)
        return self.project(x0 + g, x0)

    def ascent_direction(self, grad, x=None):
        return grad / per_example(self.norm(grad).clamp_min(1e-12), grad)

    def project(self, x, x0):
        d = x - x0
        clipped = (x0 + d).clamp(0, 1)
        outside = self.norm(clipped - x0) > self.eps
        if not bool(outside.any()):
            return clipped
        idx = outside.nonzero().squeeze(1)
        di, x0i = d[idx], x0[idx]
        t = _l2_scale(flat(di), flat(x0i), self.eps)
        for k in range(25):  # float rounding may leave a hair outside: step back, doubling (t = 0 after k = 23)
            p = (x0i + per_example(t, di) * di).clamp(0, 1)
            over = self.norm(p - x0i) > self.eps
            if not bool(over.any()):
                break
            t = torch.where(over, t * (1 - 2.0 ** (k - 23)), t)
        out = clipped.clone()
        out[idx] = p
        return out

    def norm(self, delta):
        return torch.linalg.vector_norm(flat(delta), ord=2, dim=1)

    def pull_back(self, x, x0):
        """Scale x − x₀ into the ball, then clip to [0, 1] (MadryLab's training loop): feasible, since clipping
        towards a box that holds x₀ only shortens x − x₀, but not the nearest feasible point — the exact
        :meth:`project` costs a quarter of a fast-AT step at 128 px, and a training step does not need it."""
        d = x - x0
        scale = (self.eps / self.norm(d).clamp_min(1e-12)).clamp_max(1.0)
        return (x0 + d * per_example(scale, d)).clamp_(0, 1)


class L1(ThreatModel):
    """‖x − x₀‖₁ ≤ ε. Projection onto ball ∩ box is exact (soft-thresholding + clip, bisection on the
    threshold); the ascent direction is the sparse L1 direction of Tramèr & Boneh (2019): the sign of the
    largest ``1 − sparsity`` fraction of gradient entries, skipping entries that the box stops from moving,
    scaled to unit L1 norm."""

    name = "l1"

    def __init__(self, eps: float, sparsity: float = 0.99):
        self.eps = _check_eps(eps)
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        self.sparsity = sparsity

    def random_start(self, x0, generator=None):
        """Uniform in the L1 ball (Laplace direction, radius ε·U^(1/d)), then projected onto ball ∩ box."""
        n, d = x0.shape[0], x0[0].numel()
        e = torch.empty(x0.shape, device=x0.device, dtype=x0.dtype).exponential_(generator=generator)
        s = torch.randint(0, 2, x0.shape, generator=generator, device=x0.device).to(x0.dtype) * 2 - 1
        u = torch.rand(n, generator=generator, device=x0.device, dtype=x0.dtype)
        g = e * s
        g = g * per_example(self.eps * u.pow(1.0 / d) / self.norm(g).clamp_min(1e-12), g)
        return self.project(x0 + g, x0)

    def ascent_direction(self, grad, x=None):
        g = flat(grad)
        if x is not None:  # an entry at 0 cannot decrease, at 1 cannot increase (we step along +direction)
            xf = flat(x)
            blocked = ((xf <= 0) & (g < 0)) | ((xf >= 1) & (g > 0))
            g = g.masked_fill(blocked, 0)
        k = max(1, int(round((1 - self.sparsity) * g.shape[1])))
        vals, idx = g.abs().topk(k, dim=1)
        d = torch.zeros_like(g).scatter_(1, idx, g.gather(1, idx).sign() * (vals > 0))
        d = d / d.abs().sum(1, keepdim=True).clamp_min(1.0)
        return d.view_as(grad)

    def project(self, x, x0):
        d = x - x0
        clipped = (x0 + d).clamp(0, 1)
        outside = self.norm(clipped - x0) > self.eps
        if not bool(outside.any()):
            return clipped
        idx = outside.nonzero().squeeze(1)
        di, x0i = d[idx], x0[idx]

        def at(lam):
            lam = per_example(lam, di)
            return (x0i + di.sign() * (di.abs() - lam).clamp_min(0)).clamp(0, 1)

        lo = torch.zeros(len(idx), device=x.device, dtype=x.dtype)  # infeasible
        hi = flat(di).abs().amax(1)  # feasible: x(hi) = x0
        for _ in range(_BISECTION_STEPS):
            mid = (lo + hi) / 2
            ok = self.norm(at(mid) - x0i) <= self.eps
            hi = torch.where(ok, mid, hi)
            lo = torch.where(ok, lo, mid)
        out = clipped.clone()
        out[idx] = at(hi)
        return out

    def norm(self, delta):
        return flat(delta).abs().sum(1)


class Unconstrained(ThreatModel):
    """Only the box [0, 1]. Ascent direction: the gradient divided by its mean absolute value per example
    (DeepDream's normalisation), so a step size is "how far an average pixel moves"."""

    name = "none"

    def __init__(self, eps: float | None = None):
        self.eps = math.inf

    def random_start(self, x0, generator=None):
        return torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)

    def ascent_direction(self, grad, x=None):
        return grad / per_example(flat(grad).abs().mean(1).clamp_min(1e-12), grad)

    def project(self, x, x0):
        return x.clamp(0, 1)

    def norm(self, delta):
        return torch.linalg.vector_norm(flat(delta), ord=2, dim=1)

    def contains(self, x, x0, tol=1e-6):
        return (flat(x).amin(1) >= -tol) & (flat(x).amax(1) <= 1 + tol)


_NORMS = {"linf": Linf, "l2": L2, "l1": L1}


def make_threat(norm: str, eps: float | None) -> ThreatModel:
    """``norm`` in ``linf``, ``l2``, ``l1``, ``none``; ``eps`` ≥ 0 in pixel units (ignored for ``none``).

    Example:

    ```pycon
    >>> import torch
    >>> from robustlens.optim import make_threat
    >>> threat = make_threat("linf", 8 / 255)
    >>> x0 = torch.full((1, 3, 4, 4), 0.5)
    >>> x = threat.project(x0 + 0.2, x0)  # back into the ball around x0 (and [0, 1])
    >>> round(float((x - x0).abs().max()) * 255, 3)
    8.0

    ```
    """
    key = norm.lower().replace("-", "").replace("_", "")
    key = {"inf": "linf", "linfinity": "linf", "2": "l2", "1": "l1", "unconstrained": "none"}.get(key, key)
    if key == "none":
        return Unconstrained()
    if key not in _NORMS:
        raise ValueError(f"unknown norm {norm!r}; use linf, l2, l1 or none")
    if eps is None:
        raise ValueError(f"norm {key} needs eps")
    return _NORMS[key](eps)


def _l2_scale(d: torch.Tensor, x0: torch.Tensor, eps: float, max_rounds: int = 100) -> torch.Tensor:
    """(N,): the largest t ∈ [0, 1] with ‖clip(x₀ + t·d, 0, 1) − x₀‖₂ ≤ ε, for rows d, x₀ (N, D) where t = 1 is
    infeasible.

    Pixel i hits the box at τᵢ (x₀ᵢ + τᵢdᵢ ∈ {0, 1}), so f(t) = ‖x(t) − x₀‖² = Σ dᵢ²·min(t, τᵢ)². An active-set
    iteration: with A = {i : τᵢ < tₖ} (the pixels clipped at tₖ), solve Σ_A dᵢ²τᵢ² + t²·Σ_{not A} dᵢ² = ε² for
    tₖ₊₁. That model is ≥ f on [tₖ, 1] (it counts the pixels not in A as unclipped), so every tₖ₊₁ is feasible
    and tₖ₊₁ ≥ tₖ (from t₀ = 1 the same holds on [0, 1]); it stops when A stops growing, exactly at the root of
    f(t) = ε². Three or four rounds in practice (each a few passes over the data), against the 40 of a
    bisection; ``max_rounds`` bounds pathological cases (the t reached is then feasible, a little short)."""
    room = torch.where(d > 0, 1 - x0, -x0)
    tau = (room / torch.where(d != 0, d, torch.ones_like(d))).clamp(0, 1)
    a = d.square()
    b = a * tau.square()
    total = a.sum(1)
    t = torch.ones_like(total)
    count = torch.full_like(total, -1)
    for _ in range(max_rounds):
        clipped = (tau < t.unsqueeze(1)).to(a.dtype)
        now = clipped.sum(1)
        if bool((now == count).all()):
            break
        count = now
        inside = total - (a * clipped).sum(1)
        t = ((eps * eps - (b * clipped).sum(1)).clamp_min(0) / inside.clamp_min(1e-30)).sqrt().clamp_max(1)
    return t
