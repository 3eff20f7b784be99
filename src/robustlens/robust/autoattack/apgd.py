"""APGD (Croce & Hein 2020): projected gradient descent with momentum and a step size that adapts itself.

:class:`APGDStep` is a step rule for the one engine (:func:`robustlens.optim.engine.optimize`, the
``StepRule`` protocol of :mod:`robustlens.optim.steps`). Per example it keeps its step size η (start 2ε for
L∞ and L2, ε for L1), the best point seen (highest attack gain = −engine loss) and its gradient. The update
from z_k with gradient g and previous iterate z_{k−1} is

    u = P(z_k − η·d(g)),   z_{k+1} = P(z_k + a·(u − z_k) + (1 − a)·(z_k − z_{k−1})),

with d the threat model's steepest-descent direction (sign for L∞), P the projection onto ball ∩ box and
a = 0.75 (1 for the first step). At checkpoints p_j (first after ⌈0.22·N⌉ steps, then intervals shrinking
by 0.03·N down to 0.06·N) an example halves η and restarts from its best point when

1. the gain rose in at most ρ = 75% of the steps since the last checkpoint, or
2. η was not halved at the last checkpoint and the best gain did not improve since then.

(These are the reference's conditions. One detail differs: the reference compares the first loss after the
start with 0 in its count for condition 1, this rule compares it with the loss at the start.)

:func:`apgd_ce` (cross-entropy) and :func:`apgd_t` (targeted DLR on the 9 classes ranked 2..10 by the clean
logits, one run each on the examples still correctly classified; for small inputs several targets share one
stacked batch, :func:`over_targets`) are thin recipes over the engine.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from robustlens.optim.criteria import Untargeted
from robustlens.optim.engine import optimize
from robustlens.optim.objectives import LogProb, Objective
from robustlens.optim.starts import RandomInThreat
from robustlens.optim.threat import ThreatModel, make_threat
from robustlens.robust.autoattack.losses import DLR, TargetedDLR


def _rows(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


class APGDStep:
    """APGD's step rule (see the module docstring); ``rho`` the oscillation threshold, ``momentum`` 1 − a."""

    def __init__(self, *, rho: float = 0.75, momentum: float = 0.25, alpha: float | None = None):
        self.rho, self.momentum, self.alpha = float(rho), float(momentum), alpha
        self.calls = 0

    def start(self, z: torch.Tensor, steps: int) -> None:
        self.calls, self.steps = 0, max(int(steps), 1)
        self.next_check = max(int(0.22 * self.steps), 1)  # steps until the next checkpoint
        self.min_check, self.shrink = max(int(0.06 * self.steps), 1), max(int(0.03 * self.steps), 1)
        self.since_check = 0

    def _init(self, z: torch.Tensor, grad: torch.Tensor, gain: torch.Tensor, threat: ThreatModel) -> None:
        alpha = self.alpha if self.alpha is not None else (1.0 if threat.name == "l1" else 2.0)
        self.size = torch.full_like(gain, alpha * threat.eps)  # (N,) per-example step size
        self.best_z, self.best_grad, self.best_gain = z.clone(), grad.clone(), gain.clone()
        self.gains = gain[None].clone()  # (k, N) recent gains, the oldest first
        self.prev_z = z.clone()
        self.halved = torch.ones_like(gain, dtype=torch.bool)  # halved at the last checkpoint
        self.best_at_check = gain.clone()

    def _checkpoint(self, z: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.next_check
        rises = (self.gains[-k:] > self.gains[-k - 1:-1]).sum(0)  # (N,) steps that raised the gain
        oscillating = rises <= k * self.rho
        stalled = ~self.halved & (self.best_at_check >= self.best_gain)
        halve = oscillating | stalled
        self.halved, self.best_at_check = halve, self.best_gain.clone()
        self.size = torch.where(halve, self.size / 2, self.size)
        z = torch.where(_rows(halve, z), self.best_z, z)
        grad = torch.where(_rows(halve, grad), self.best_grad, grad)
        self.next_check = max(k - self.shrink, self.min_check)
        self.since_check = 0
        return z, grad

    def step(self, z: torch.Tensor, grad: torch.Tensor, *, loss: torch.Tensor, t: int, threat: ThreatModel,
             x0: torch.Tensor) -> torch.Tensor:
        gain = -loss.detach().float()  # the engine minimises; APGD's bookkeeping maximises the gain
        if self.calls == 0:
            self._init(z, grad, gain, threat)
        else:
            self.gains = torch.cat([self.gains, gain[None]])[-(self.next_check + 1):]
            better = gain > self.best_gain
            self.best_z = torch.where(_rows(better, z), z, self.best_z)
            self.best_grad = torch.where(_rows(better, grad), grad, self.best_grad)
            self.best_gain = torch.where(better, gain, self.best_gain)
            self.since_check += 1
            if self.since_check == self.next_check:
                z, grad = self._checkpoint(z, grad)
        a = 1.0 if self.calls == 0 else 1.0 - self.momentum
        previous, self.prev_z = self.prev_z, z
        u = threat.project(z - _rows(self.size, z) * threat.ascent_direction(grad, z), x0)
        self.calls += 1
        return threat.project(z + a * (u - z) + (1 - a) * (z - previous), x0)

    def keep(self, rows: torch.Tensor) -> None:
        if self.calls == 0:
            return
        for name in ("size", "best_z", "best_grad", "best_gain", "prev_z", "halved", "best_at_check"):
            setattr(self, name, getattr(self, name)[rows])
        self.gains = self.gains[:, rows]

    def __repr__(self) -> str:
        return f"APGDStep(rho={self.rho:g}, momentum={self.momentum:g})"


def run_apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Objective, *, threat: ThreatModel,
             steps: int, restarts: int, seed: int, rho: float = 0.75) -> torch.Tensor:
    """APGD on the engine minimising ``objective`` from a random start in the ball; success is any
    misclassification (APGD-T's too). Returns (N,C,H,W): each example's first misclassified iterate, else its
    lowest-loss one."""
    res = optimize(model, x, objective, steps=steps, threat=threat, rule=APGDStep(rho=rho), start=RandomInThreat(),
                   restarts=restarts, criterion=Untargeted(y), early_stop=True, seed=seed, progress=False,
                   history=False, desc="apgd")
    return res.x


def apgd_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf", eps: float,
            steps: int = 100, restarts: int = 1, seed: int = 0, loss: str = "ce") -> torch.Tensor:
    """Untargeted APGD on cross-entropy (``loss="ce"``) or DLR (``"dlr"``); ``x`` (N,C,H,W) in [0,1],
    ``y`` (N,) labels, ``eps`` in pixel units. Returns adversarial candidates (N,C,H,W)."""
    objective = LogProb(y) if loss == "ce" else DLR(y)  # log p(y) = −CE: minimised
    return run_apgd(model, x, y, objective, threat=make_threat(norm, eps), steps=steps, restarts=restarts,
                    seed=seed)


def target_classes(logits: torch.Tensor, count: int) -> torch.Tensor:
    """(count, N): row k is each example's class ranked k+2 by ``logits`` (N, K) (the runner-up first)."""
    order = logits.argsort(1, descending=True)
    return order[:, 1:count + 1].T


# Targets share one batch while the stacked batch holds at most this many input values (1024 MNIST digits): on
# the 2-core CPU an MNIST LeNet-5 input-gradient step costs 0.93 ms per digit at batch 90 and 0.49 ms at 810.
# Larger images (Imagenette, ImageNet) stay at one target per run, as before: memory grows with the batch.
TARGET_BATCH_VALUES = 1024 * 28 * 28


def target_groups(targets: int, rows: int, values_per_row: int) -> list[range]:
    """Consecutive groups of target ranks 0..targets−1 run together on ``rows`` examples each, so that a run's
    batch (group size × rows) holds at most :data:`TARGET_BATCH_VALUES` input values (one target at least)."""
    size = max(1, min(targets, TARGET_BATCH_VALUES // max(1, rows * values_per_row)))
    return [range(k, min(k + size, targets)) for k in range(0, targets, size)]


def over_targets(x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, targets: int,
                 run: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor],
                 broke: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """A targeted attack against each of the top ``targets`` wrong classes by ``logits`` (N, K), each run only
    on the examples no earlier run broke. Targets of one :func:`target_groups` group run in one stacked batch:
    ``run(x, y, t, k)`` (rows: the group's targets one after another; ``k`` the group's first rank) returns
    candidates and ``broke(cand, x, y)`` (rows,) says which count; each example keeps the candidate of the
    first target, in rank order, that broke it. Returns (N,C,H,W): those candidates, ``x`` elsewhere."""
    targets = min(targets, logits.shape[1] - 1)
    ranked = target_classes(logits, targets)                                  # (targets, N)
    adv = x.clone()
    alive = logits.argmax(1) == y
    for group in target_groups(targets, int(alive.sum()), x[0].numel()):
        idx = alive.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        g, n = len(group), len(idx)
        xs, ys = x[idx].repeat(g, *([1] * (x.dim() - 1))), y[idx].repeat(g)
        cand = run(xs, ys, ranked[list(group)][:, idx].reshape(-1), group[0])
        with torch.no_grad():
            hits = broke(cand, xs, ys).view(g, n)
        hit = hits.any(0)
        first = hits.float().argmax(0)                                        # the first target that broke it
        adv[idx[hit]] = cand.view(g, n, *x.shape[1:])[first[hit], hit.nonzero().squeeze(1)]
        alive[idx[hit]] = False
    return adv


def apgd_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf", eps: float,
           steps: int = 100, targets: int = 9, seed: int = 0) -> torch.Tensor:
    """Targeted-DLR APGD against each of the top ``targets`` wrong classes (:func:`over_targets`: small inputs
    run several targets in one batch). Returns adversarial candidates (N,C,H,W)."""
    threat = make_threat(norm, eps)
    with torch.no_grad():
        logits = model(x).float()

    def run(xs: torch.Tensor, ys: torch.Tensor, ts: torch.Tensor, k: int) -> torch.Tensor:
        return run_apgd(model, xs, ys, TargetedDLR(ys, ts), threat=threat, steps=steps, restarts=1, seed=seed + k)

    return over_targets(x, y, logits, targets, run, lambda cand, xs, ys: model(cand).argmax(1) != ys)
