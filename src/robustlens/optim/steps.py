"""Step rules and schedules: how the engine moves an iterate given the gradient of its loss.

A step rule is an object with per-example state (rows can be dropped when examples stop early):

- :class:`SteepestStep` — projected steepest descent for the threat model's norm (PGD): the step is
  ``size · threat.ascent_direction(grad)`` (sign of the gradient for L∞, unit L2 direction for L2, ...);
- :class:`Adam` — element-wise Adam on the optimised tensor (feature inversion and visualisation).

A :class:`Schedule` scales the step size with the step index. The engine projects the result onto the
threat set; a rule never needs to.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from robustlens.optim.threat import ThreatModel


def madry_step_size(eps: float, steps: int) -> float:
    """Madry et al.'s PGD step size, 2.5·ε/steps: the walk can cross the ball and back, and still moves
    precisely at the end.

    Example:

    ```pycon
    >>> from robustlens.optim import madry_step_size
    >>> round(madry_step_size(8 / 255, 10) * 255, 3)  # 2.5 * eps / steps
    2.0

    ```
    """
    return 2.5 * eps / max(steps, 1)


class Schedule(Protocol):
    """Step-size factor at step ``t`` of ``steps``."""

    def __call__(self, t: int, steps: int) -> float: ...


class Constant:
    """Factor 1 at every step."""

    def __call__(self, t: int, steps: int) -> float:
        return 1.0

    def __repr__(self) -> str:
        return "Constant()"


class Cosine:
    """½(1 + cos(π·t/steps)): large moves first, fine ones at the end."""

    def __call__(self, t: int, steps: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * t / max(steps, 1)))

    def __repr__(self) -> str:
        return "Cosine()"


SCHEDULES: dict[str, type[Constant] | type[Cosine]] = {"constant": Constant, "cosine": Cosine}


class StepRule(Protocol):
    """A step rule. ``start(z, steps)`` sets up per-example state for a run over ``z`` (N, ...);
    ``step(z, grad, loss=, t=, threat=, x0=)`` returns the next iterate from the current one, the gradient of
    each example's loss (N, ...) and the loss itself (N,) at step ``t`` (the engine projects the result onto
    ``threat`` around ``x0``; a rule that needs projected intermediate points, e.g. with momentum, projects
    them itself); ``keep(rows)`` drops state rows when early-stopped examples leave the batch."""

    def start(self, z: torch.Tensor, steps: int) -> None: ...

    def step(self, z: torch.Tensor, grad: torch.Tensor, *, loss: torch.Tensor, t: int, threat: ThreatModel,
             x0: torch.Tensor) -> torch.Tensor: ...

    def keep(self, rows: torch.Tensor) -> None: ...


class SteepestStep:
    """z ← z − size·schedule(t)·threat.ascent_direction(grad) (PGD; FGSM is one step of size ε)."""

    def __init__(self, size: float, schedule: Schedule | None = None):
        self.size = float(size)
        self.schedule: Schedule = schedule or Constant()
        self.steps = 1

    def start(self, z: torch.Tensor, steps: int) -> None:
        self.steps = steps

    def step(self, z: torch.Tensor, grad: torch.Tensor, *, loss: torch.Tensor, t: int, threat: ThreatModel,
             x0: torch.Tensor) -> torch.Tensor:
        return z - self.size * self.schedule(t, self.steps) * threat.ascent_direction(grad, z)

    def keep(self, rows: torch.Tensor) -> None:
        pass

    def __repr__(self) -> str:
        return f"SteepestStep(size={self.size:g}, schedule={self.schedule!r})"


class Adam:
    """Element-wise Adam with learning rate ``lr``·schedule(t), per-example state (rows can be dropped)."""

    def __init__(self, lr: float, schedule: Schedule | None = None, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.lr = float(lr)
        self.schedule: Schedule = schedule or Constant()
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.m = self.v = torch.zeros(0)
        self.t = 0
        self.steps = 1

    def start(self, z: torch.Tensor, steps: int) -> None:
        self.m, self.v, self.t, self.steps = torch.zeros_like(z), torch.zeros_like(z), 0, steps

    def step(self, z: torch.Tensor, grad: torch.Tensor, *, loss: torch.Tensor, t: int, threat: ThreatModel,
             x0: torch.Tensor) -> torch.Tensor:
        self.t += 1
        self.m.mul_(self.b1).add_(grad, alpha=1 - self.b1)
        self.v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        mhat = self.m / (1 - self.b1 ** self.t)
        vhat = self.v / (1 - self.b2 ** self.t)
        return z - self.lr * self.schedule(t, self.steps) * mhat / (vhat.sqrt() + self.eps)

    def keep(self, rows: torch.Tensor) -> None:
        self.m, self.v = self.m[rows], self.v[rows]

    def __repr__(self) -> str:
        return f"Adam(lr={self.lr:g}, schedule={self.schedule!r})"
