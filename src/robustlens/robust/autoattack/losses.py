"""DLR losses (Croce & Hein 2020) as functions of the logits and as objectives to minimise.

With logits z (N, K) sorted descending as z_π1 ≥ z_π2 ≥ ...:

- DLR(z, y) = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12): the margin, made invariant to shifting and
  scaling the logits (cross-entropy is not: a model whose softmax saturates has vanishing CE gradients);
- targeted DLR(z, y, t) = −(z_y − z_t) / (z_π1 − ½(z_π3 + z_π4) + 1e-12).

The functions return the reference's sign (an attack *maximises* them; positive = misclassified for DLR).
The engine minimises, so the objectives return their negatives.
"""

from __future__ import annotations

import torch

from robustlens.optim.objectives import ClassObjective, Objective, Outputs

_TINY = 1e-12


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z_y − max_{i≠y} z_i, shape (N,): positive while ``labels`` (N,) is the top-1 class."""
    z = logits.float()
    zy = z.gather(1, labels[:, None]).squeeze(1)
    return zy - z.scatter(1, labels[:, None], float("-inf")).amax(1)


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """DLR (N,) from logits (N, K ≥ 3) and labels (N,); an untargeted attack maximises it."""
    zs = logits.float().sort(1, descending=True).values
    return -margin(logits, labels) / (zs[:, 0] - zs[:, 2] + _TINY)


def dlr_loss_targeted(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (N,) from logits (N, K ≥ 4), labels and targets (N,); a targeted attack maximises it."""
    z = logits.float()
    zs = z.sort(1, descending=True).values
    zy = z.gather(1, labels[:, None]).squeeze(1)
    zt = z.gather(1, targets[:, None]).squeeze(1)
    return -(zy - zt) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + _TINY)


class DLR(ClassObjective):
    """Untargeted: loss = −DLR(logits, label) (negative once the example is misclassified)."""

    def __call__(self, out: Outputs) -> torch.Tensor:
        return -dlr_loss(out.logits, self._rows(out))

    def __repr__(self) -> str:
        return "DLR"


class TargetedDLR(Objective):
    """Targeted at ``targets`` away from ``labels``: loss = −targeted DLR (both (N,) or (1,))."""

    def __init__(self, labels: torch.Tensor, targets: torch.Tensor):
        self.labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        self.targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1)

    def __call__(self, out: Outputs) -> torch.Tensor:
        dev = out.logits.device
        return -dlr_loss_targeted(out.logits, out.select(self.labels.to(dev)), out.select(self.targets.to(dev)))

    def __repr__(self) -> str:
        return "TargetedDLR"
