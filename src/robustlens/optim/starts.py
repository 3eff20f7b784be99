"""Where each restart of an optimisation begins. The first restart uses the start given; every later restart
begins at a random point of the threat set (:meth:`ThreatModel.random_start`), from the run's seeded generator."""

from __future__ import annotations

from typing import Protocol

import torch

from robustlens.optim.threat import ThreatModel


class Start(Protocol):
    """``start(x0, threat, generator, restart) -> (N, ...)`` the first iterate of restart ``restart``."""

    def __call__(self, x0: torch.Tensor, threat: ThreatModel, gen: torch.Generator, restart: int) -> torch.Tensor: ...


class AtInput:
    """The first restart starts at x₀ itself."""

    def __call__(self, x0: torch.Tensor, threat: ThreatModel, gen: torch.Generator, restart: int) -> torch.Tensor:
        return x0.clone() if restart == 0 else threat.random_start(x0, gen)

    def __repr__(self) -> str:
        return "AtInput()"


class RandomInThreat:
    """Every restart starts at a random point of the threat set (PGD's random start)."""

    def __call__(self, x0: torch.Tensor, threat: ThreatModel, gen: torch.Generator, restart: int) -> torch.Tensor:
        return threat.random_start(x0, gen)

    def __repr__(self) -> str:
        return "RandomInThreat()"


class AtTensor:
    """The first restart starts at ``start`` (like x₀, projected onto the threat set), e.g. noise or the result
    of an earlier run."""

    def __init__(self, start: torch.Tensor):
        self.start = start.detach()

    def __call__(self, x0: torch.Tensor, threat: ThreatModel, gen: torch.Generator, restart: int) -> torch.Tensor:
        if self.start.shape != x0.shape:
            raise ValueError(f"start has shape {tuple(self.start.shape)}, x0 has {tuple(x0.shape)}")
        return threat.project(self.start.to(x0), x0) if restart == 0 else threat.random_start(x0, gen)

    def __repr__(self) -> str:
        return f"AtTensor({tuple(self.start.shape)})"


def as_start(start: Start | torch.Tensor | None) -> Start:
    """A start object; a tensor is :class:`AtTensor`, None is :class:`AtInput`."""
    if start is None:
        return AtInput()
    if isinstance(start, torch.Tensor):
        return AtTensor(start)
    if callable(start):
        return start
    raise TypeError(f"start must be a Start (AtInput(), RandomInThreat(), AtTensor(t)) or a tensor, got {start!r}")
