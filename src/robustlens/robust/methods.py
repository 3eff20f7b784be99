"""Training methods as objects: what each step trains on, and the loss it minimises.

- :class:`Standard`: the clean batch, cross-entropy;
- :class:`PGDTraining` (Madry et al.): PGD adversarial examples (random start), cross-entropy on them;
- :class:`FastAT` (Wong et al.): one FGSM step of 1.25·ε from a random start, cross-entropy;
- :class:`Trades` (Zhang et al.): PGD on KL(p(x) ‖ p(x')) from x + 0.001·N(0,1), then CE(x) + β·KL.

Each has ``attack_steps``, ``step_size(eps)``, ``inputs(model, x, y, eps, seed, amp)`` (called with the model in
training mode; attacks run in eval mode, under bf16 autocast when ``amp`` is ``torch.bfloat16``) and
``loss(trainee, model, x, x_train, y) -> (loss, logits)``.

The PGD and fast-AT inputs come from :func:`training_adversary`, the loop adversarial training uses (Madry et al.,
Wong et al.): random start, ``steps`` normalised ascent steps, projection, the last iterate. It is not the
evaluation engine (:func:`robustlens.optim.engine.optimize`): no best-iterate bookkeeping, no float32 re-check,
no private model copy — a training step needs an input that raises the loss, not a certified worst case, and
the engine's extra passes cost more than the attack itself (one fast-AT step: 2 forward/backward passes
instead of 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.models.classifier import Classifier
from robustlens.optim.speed import autocast
from robustlens.optim.steps import madry_step_size
from robustlens.optim.threat import make_threat

Step = tuple[torch.Tensor, torch.Tensor]  # (loss, logits on the training inputs)


def training_adversary(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float,
                       step_size: float, steps: int, seed: int, amp: torch.dtype | None = None) -> torch.Tensor:
    """Untargeted PGD as adversarial training runs it: a random start in the ε-ball ∩ [0,1] (seeded by
    ``seed``), ``steps`` ascent steps of ``step_size`` on the summed cross-entropy (sign steps for L∞, unit-L2
    steps for L2), each pulled back into the threat set (:meth:`ThreatModel.pull_back`: for L2 the radial
    scaling then clipping of MadryLab's loop, not the exact projection); the last iterate, detached. ``x`` (N,C,H,W) in [0,1], ``y`` (N,). The
    model runs in eval mode (BatchNorm running statistics, as MadryLab's robustness library attacks) and is
    restored to its mode; only input gradients are computed (parameters get no ``.grad``)."""
    threat = make_threat(norm, eps)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    fmt = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format
    was_training = model.training
    model.eval()
    try:
        xa = threat.random_start(x, gen).contiguous(memory_format=fmt)
        for _ in range(steps):
            xa.requires_grad_(True)
            with autocast(x.device, amp):
                loss = F.cross_entropy(model(xa).float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xa)
            xa = threat.pull_back(xa.detach() + step_size * threat.ascent_direction(grad, xa), x)
            xa = xa.contiguous(memory_format=fmt)
    finally:
        model.train(was_training)
    return xa.detach()


class Standard:
    """Clean training."""

    name = "standard"

    def __init__(self, norm: str = "linf", steps: int = 0, step_size: float | None = None, beta: float = 0.0):
        self.norm, self.steps, self.fixed_step, self.beta = norm, steps, step_size, beta
        self.attack_steps = self._attack_steps(steps)

    def _attack_steps(self, steps: int) -> int:
        return 0

    def step_size(self, eps: float) -> float:
        return 0.0

    def inputs(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
               amp: torch.dtype | None = None) -> torch.Tensor:
        return x

    def loss(self, trainee: nn.Module, model: Classifier, x: torch.Tensor, x_train: torch.Tensor,
             y: torch.Tensor) -> Step:
        logits = trainee(model.normalize(x_train)).float()
        return F.cross_entropy(logits, y), logits


class PGDTraining(Standard):
    """PGD adversarial training; step size 2.5·ε/steps unless given."""

    name = "pgd"

    def _attack_steps(self, steps: int) -> int:
        return steps

    def step_size(self, eps: float) -> float:
        return self.fixed_step if self.fixed_step is not None else madry_step_size(eps, self.steps)

    def inputs(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
               amp: torch.dtype | None = None) -> torch.Tensor:
        return training_adversary(model, x, y, norm=self.norm, eps=eps, step_size=self.step_size(eps),
                                  steps=self.attack_steps, seed=seed, amp=amp)


class FastAT(PGDTraining):
    """Fast adversarial training: one step of 1.25·ε (unless given) from a random start."""

    name = "fast"

    def _attack_steps(self, steps: int) -> int:
        return 1

    def step_size(self, eps: float) -> float:
        return self.fixed_step if self.fixed_step is not None else 1.25 * eps


class Trades(Standard):
    """TRADES: CE on the clean batch + β·KL(p(x) ‖ p(x')) with x' maximising that KL (step size ε/4)."""

    name = "trades"

    def _attack_steps(self, steps: int) -> int:
        return steps

    def step_size(self, eps: float) -> float:
        return self.fixed_step if self.fixed_step is not None else eps / 4

    def inputs(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
               amp: torch.dtype | None = None) -> torch.Tensor:
        model.eval()
        try:
            return self._adversary(model, x, eps, seed)
        finally:
            model.train()

    def _adversary(self, model: nn.Module, x: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        from robustlens.optim.engine import optimize
        from robustlens.optim.objectives import Lambda
        from robustlens.optim.threat import make_threat

        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)
        gen = torch.Generator(device=x.device).manual_seed(seed)
        start = x + 0.001 * torch.randn(x.shape, generator=gen, device=x.device)

        def neg_kl(out):
            logp = F.log_softmax(out.logits, dim=1)
            pc = out.select(p_clean)
            return -(pc * (pc.clamp_min(1e-12).log() - logp)).sum(1)

        res = optimize(model, x, Lambda(neg_kl, name="-KL"), threat=make_threat(self.norm, eps), steps=self.steps,
                       step_size=self.step_size(eps), start=start, seed=seed, progress=False, history=False)
        return res.x

    def loss(self, trainee: nn.Module, model: Classifier, x: torch.Tensor, x_train: torch.Tensor,
             y: torch.Tensor) -> Step:
        logits_clean = trainee(model.normalize(x)).float()
        logits = trainee(model.normalize(x_train)).float()
        kl = F.kl_div(F.log_softmax(logits, 1), F.softmax(logits_clean, 1), reduction="batchmean")
        return F.cross_entropy(logits_clean, y) + self.beta * kl, logits


METHODS: dict[str, type[Standard]] = {m.name: m for m in (Standard, PGDTraining, FastAT, Trades)}
