"""What every attribution method shares: the :class:`Attribution` result, target classes, the score whose input
gradient is taken (the target's logit), and the speed settings under which the gradient passes run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from robustlens.errors import UserError
from robustlens.optim import speed
from robustlens.optim.prepare import prepare

TargetSpec = int | str | Sequence[int] | torch.Tensor | None


@dataclass
class Attribution:
    """One method's maps for a batch: ``maps`` (N,C,H,W) for pixel methods, (N,1,H,W) for class-activation maps;
    ``targets`` (N,) the explained classes; ``completeness_error`` (N,) for Integrated Gradients
    (Σ attributions − (f(x) − f(baseline)), in logits); ``info`` method settings."""

    method: str
    maps: torch.Tensor
    targets: torch.Tensor
    completeness_error: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"method": self.method, "targets": [int(t) for t in self.targets], **self.info}
        if self.completeness_error is not None:
            d["completeness_error"] = [float(e) for e in self.completeness_error]
        return d


def check_images(x: torch.Tensor) -> torch.Tensor:
    """Refuse anything but a float (N,C,H,W) batch of images in [0, 1] (one image may come as (C,H,W))."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise UserError("images must be a float tensor (N,C,H,W) in [0, 1]")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] == 0:
        raise UserError(f"images must have shape (N,C,H,W); got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise UserError("images must be finite and in [0, 1]")
    return x.detach()


def resolve_targets(model: nn.Module, x: torch.Tensor, target: TargetSpec) -> torch.Tensor:
    """(N,) long class indices: the model's top-1 for ``None``; one class (index, wnid or name) for all images;
    or one index per image."""
    n = x.shape[0]
    classes = int(getattr(model, "num_classes", 0)) or None
    if target is None:
        with torch.no_grad():
            return model(x).argmax(1)
    if isinstance(target, (int, str)) and not isinstance(target, bool):
        from robustlens.robust.compare import target_for

        return torch.full((n,), target_for(model, str(target)), dtype=torch.long, device=x.device)
    t = torch.as_tensor(target, dtype=torch.long, device=x.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise UserError(f"give one target or one per image ({n}); got {t.numel()}")
    if classes is not None and (int(t.min()) < 0 or int(t.max()) >= classes):
        raise UserError(f"target classes must be in 0..{classes - 1}")
    return t


def target_scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(M,) the logit of each row's target: logits (M, classes), targets (M,)."""
    return logits.gather(1, targets.view(-1, 1)).squeeze(1)


@contextlib.contextmanager
def gradient_model(model: nn.Module, probe: torch.Tensor, *, fast: bool = True) -> Iterator[tuple[nn.Module, bool]]:
    """Yield (the module to differentiate, channels-last?) for logit-gradient methods under the speed settings
    in force (:mod:`robustlens.optim.speed`): the private BatchNorm-folded copy (same logits up to float
    rounding; the model itself is untouched) and channels-last weights. Parameters are frozen in the block.
    ``fast=False`` yields ``model`` itself (needed when hooks on inner layers must run)."""
    with prepare(model, probe, speed.current() if fast else speed.PLAIN, hooks=not fast) as net:
        yield net.net, net.fmt == torch.channels_last


def input_gradient(run: nn.Module, x: torch.Tensor, targets: torch.Tensor, *,
                   channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂ logit_target / ∂x (M,C,H,W), logit_target (M,)) for inputs x (M,C,H,W) in one forward/backward pass.
    Each row's score depends only on its own input, so the gradient of the summed scores is per-row exact."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xi = speed.in_format(x.detach(), fmt).requires_grad_(True)
    with torch.enable_grad():
        scores = target_scores(run(xi).float(), targets)        # (M,)
        (grad,) = torch.autograd.grad(scores.sum(), xi)         # (M,C,H,W)
    return grad.contiguous(), scores.detach()


def chunks(total: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(total)`` of at most ``size`` items."""
    size = max(1, int(size))
    for start in range(0, total, size):
        yield slice(start, min(total, start + size))
