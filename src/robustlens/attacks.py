"""Adversarial attacks: thin recipes over :func:`robustlens.engine.optimize`.

- :func:`pgd` / :func:`fgsm`: tensors in, adversarial tensors out (what robust evaluation and adversarial
  training call).
- :func:`attack`: the user-facing attack with predictions, norms, image-quality figures and an 8-bit-safe
  result (see :class:`AttackResult`).

ε and step sizes are in [0, 1] pixel units.
"""

from __future__ import annotations

import torch
from torch import nn

from .engine import optimize
from .objectives import CrossEntropy, CWMargin, LogProb, Objective, Outputs
from .threat import make_threat

LOSSES = ("ce", "logprob", "cw")


def class_objective(loss: str, classes: torch.Tensor, *, targeted: bool) -> Objective:
    """The loss to minimise: targeted pushes ``classes`` up, untargeted pushes them down.

    ``"ce"`` and ``"logprob"`` are the same function of the logits (CE = −log p): targeted −log p(target),
    untargeted +log p(label); ``"cw"`` is the Carlini-Wagner logit margin."""
    if loss in ("ce", "logprob"):
        return LogProb(classes) if targeted else CrossEntropy(classes)
    if loss == "cw":
        return CWMargin(classes, targeted=targeted)
    raise ValueError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")


def class_success(classes: torch.Tensor, *, targeted: bool):
    """``success_fn`` for the engine: top-1 == target (targeted) or top-1 != label (untargeted)."""
    classes = torch.as_tensor(classes, dtype=torch.long).reshape(-1)

    def success(out: Outputs) -> torch.Tensor:
        c = out.rows(classes.to(out.logits.device))
        top1 = out.logits.argmax(1)
        return top1 == c if targeted else top1 != c

    return success


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str = "linf",
    eps: float,
    step_size: float,
    steps: int,
    targeted: bool = False,
    random_start: bool = True,
    loss: str = "ce",
    seed: int = 0,
    restarts: int = 1,
    early_stop: bool = False,
    progress: bool = False,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al.). ``x`` (N,C,H,W) in [0,1]; ``y`` (N,) true labels
    (untargeted: maximise their CE) or target labels (``targeted``: maximise their log-probability).

    Returns the adversarial images (same shape as ``x``, detached): per example the best iterate over all
    steps and restarts — a successful one if any, else the one with the highest attack loss — inside
    the ε-ball around ``x`` and [0,1]. Model parameters and train/eval mode are left as they were.
    """
    y = torch.as_tensor(y, dtype=torch.long, device=x.device).reshape(-1)
    if y.numel() not in (1, x.shape[0]):
        raise ValueError(f"y has {y.numel()} labels for {x.shape[0]} images")
    res = optimize(model, x, class_objective(loss, y, targeted=targeted), threat=make_threat(norm, eps),
                   steps=steps, step_size=step_size, start="random" if random_start else "x0", restarts=restarts,
                   early_stop=early_stop, success_fn=class_success(y, targeted=targeted), seed=seed,
                   progress=progress, history=False, desc="pgd")
    return res.x


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf", eps: float,
         targeted: bool = False, loss: str = "ce", progress: bool = False) -> torch.Tensor:
    """Fast gradient (sign) method: :func:`pgd` with one step of size ``eps`` from ``x`` (no random start)."""
    return pgd(model, x, y, norm=norm, eps=eps, step_size=eps, steps=1, targeted=targeted, random_start=False,
               loss=loss, progress=progress)
