"""Training methods as objects: what each step trains on, and the loss it minimises.

- :class:`Standard`: the clean batch, cross-entropy;
- :class:`PGDTraining` (Madry et al.): PGD adversarial examples (random start), cross-entropy on them;
- :class:`FastAT` (Wong et al.): one FGSM step of 1.25·ε from a random start, cross-entropy;
- :class:`Trades` (Zhang et al.): PGD on KL(p(x) ‖ p(x')) from x + 0.001·N(0,1), then CE(x) + β·KL.

Each has ``attack_steps``, ``step_size(eps)``, ``inputs(model, x, y, eps, seed)`` (called with the model in
training mode; attacks run in eval mode) and ``loss(trainee, model, x, x_train, y) -> (loss, logits)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.optim.steps import madry_step_size

Step = tuple[torch.Tensor, torch.Tensor]  # (loss, logits on the training inputs)


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

    def inputs(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        return x

    def loss(self, trainee: nn.Module, model: nn.Module, x: torch.Tensor, x_train: torch.Tensor,
             y: torch.Tensor) -> Step:
        logits = trainee(model.normalize(x_train))
        return F.cross_entropy(logits, y), logits


class PGDTraining(Standard):
    """PGD adversarial training; step size 2.5·ε/steps unless given."""

    name = "pgd"

    def _attack_steps(self, steps: int) -> int:
        return steps

    def step_size(self, eps: float) -> float:
        return self.fixed_step if self.fixed_step is not None else madry_step_size(eps, self.steps)

    def inputs(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        from robustlens.recipes.attacks import pgd

        return pgd(model, x, y, norm=self.norm, eps=eps, step_size=self.step_size(eps), steps=self.attack_steps,
                   random_start=True, seed=seed)


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

    def inputs(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
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

    def loss(self, trainee: nn.Module, model: nn.Module, x: torch.Tensor, x_train: torch.Tensor,
             y: torch.Tensor) -> Step:
        logits_clean = trainee(model.normalize(x))
        logits = trainee(model.normalize(x_train))
        kl = F.kl_div(F.log_softmax(logits, 1), F.softmax(logits_clean, 1), reduction="batchmean")
        return F.cross_entropy(logits_clean, y) + self.beta * kl, logits


METHODS: dict[str, type[Standard]] = {m.name: m for m in (Standard, PGDTraining, FastAT, Trades)}
