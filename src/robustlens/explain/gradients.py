"""Gradient methods: saliency ∂f_c/∂x, gradient × input, SmoothGrad (and SmoothGrad²), Guided Backprop.

f_c is the logit of the target class c. Each public ``attribute`` checks its inputs and resolves the targets;
the private ``_attribute`` computes. One forward/backward pass per batch (SmoothGrad: over the N·n noisy
copies, in chunks of ``batch_size``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from robustlens.checks import positive
from robustlens.errors import UserError
from robustlens.explain._core import (
    Attribution,
    TargetSpec,
    check_images,
    chunks,
    gradient_model,
    input_gradient,
    resolve_targets,
)


class GradientMethod:
    """Base: holds the model (never modified) and the chunk size for batched passes."""

    name = "gradient"

    def __init__(self, model: nn.Module, *, batch_size: int = 64):
        self.model = model
        self.batch_size = int(batch_size)

    def _prepare(self, x: torch.Tensor, target: TargetSpec) -> tuple[torch.Tensor, torch.Tensor]:
        x = check_images(x)
        return x, resolve_targets(self.model, x, target)

    def _gradient(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """∂f_t/∂x (M,C,H,W) for M inputs, in chunks, on the fast copy of the model."""
        out = torch.empty_like(x)
        with gradient_model(self.model, x) as (run, cl):
            for s in chunks(x.shape[0], self.batch_size):
                out[s] = input_gradient(run, x[s], targets[s], channels_last=cl)[0]
        return out


class Saliency(GradientMethod):
    """Vanilla gradient ∂f_c/∂x (Simonyan et al. 2014), signed; take ``.abs()`` for the classic map."""

    name = "saliency"

    def attribute(self, x: torch.Tensor, target: TargetSpec = None) -> Attribution:
        x, t = self._prepare(x, target)
        return Attribution(self.name, self._attribute(x, t), t)

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._gradient(x, targets)                        # (N,C,H,W)


class GradientXInput(GradientMethod):
    """x ⊙ ∂f_c/∂x (Shrikumar et al. 2016): IG with a black baseline and one step."""

    name = "gradxinput"

    def attribute(self, x: torch.Tensor, target: TargetSpec = None) -> Attribution:
        x, t = self._prepare(x, target)
        return Attribution(self.name, self._attribute(x, t), t)

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return x * self._gradient(x, targets)                    # (N,C,H,W)


class SmoothGrad(GradientMethod):
    """Mean of the gradient over n noisy copies x + ε, ε ~ N(0, (σ·(max x − min x))²) per image (Smilkov et al.
    2017; σ is a fraction of each image's value range). ``squared=True``: the mean of the squared gradients
    (SmoothGrad², as Captum's ``smoothgrad_sq``)."""

    name = "smoothgrad"

    def attribute(self, x: torch.Tensor, target: TargetSpec = None, *, samples: int = 25, sigma: float = 0.15,
                  squared: bool = False, noise: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> Attribution:
        """``noise``: explicit draws (N, samples, C, H, W) in pixel units (σ is then ignored); else drawn
        with ``generator``."""
        x, t = self._prepare(x, target)
        positive("samples", samples)
        positive("sigma", sigma, allow_zero=True)
        if noise is None:
            span = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).view(-1, 1, 1, 1, 1)   # (N,1,1,1,1)
            shape = (x.shape[0], int(samples), *x.shape[1:])
            noise = torch.randn(shape, generator=generator, device=x.device) * (sigma * span)
        elif noise.shape[0] != x.shape[0] or noise.shape[2:] != x.shape[1:]:
            raise UserError(f"noise must have shape (N, samples, C, H, W) = ({x.shape[0]}, n, "
                            f"{', '.join(map(str, x.shape[1:]))}); got {tuple(noise.shape)}")
        info = {"samples": int(noise.shape[1]), "sigma": float(sigma), "squared": bool(squared)}
        maps = self._attribute(x, t, noise, squared)
        return Attribution("smoothgrad_sq" if squared else self.name, maps, t, info=info)

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor, noise: torch.Tensor, squared: bool) -> torch.Tensor:
        n, s = noise.shape[:2]
        noisy = (x.unsqueeze(1) + noise).flatten(0, 1)           # (N·S,C,H,W), image-major
        g = self._gradient(noisy, targets.repeat_interleave(s))  # (N·S,C,H,W)
        g = g.view(n, s, *x.shape[1:])                           # (N,S,C,H,W)
        return (g * g if squared else g).mean(1)                 # (N,C,H,W)


class _GuidedReLU(torch.autograd.Function):
    """ReLU (or ReLU6) forward; backward passes only positive gradients through positive inputs."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, upper: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.upper = upper
        return x.clamp(0, upper)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        keep = (x > 0) & (x < ctx.upper) & (grad > 0)
        return grad * keep, None


class _GuidedActivation(nn.Module):
    def __init__(self, upper: float):
        super().__init__()
        self.upper = upper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GuidedReLU.apply(x, self.upper)


def guided_copy(model: nn.Module) -> tuple[nn.Module, int]:
    """A deep copy of ``model`` with every ``nn.ReLU``/``nn.ReLU6`` module replaced by its guided version, and
    how many were replaced (functional ``F.relu`` calls are not seen)."""
    guided = copy.deepcopy(model)
    count = 0
    for name, mod in list(guided.named_modules()):
        if isinstance(mod, (nn.ReLU, nn.ReLU6)):
            upper = 6.0 if isinstance(mod, nn.ReLU6) else float("inf")
            parent, _, leaf = name.rpartition(".")
            setattr(guided.get_submodule(parent) if parent else guided, leaf, _GuidedActivation(upper))
            count += 1
    return guided, count


class GuidedBackprop(GradientMethod):
    """Guided Backprop (Springenberg et al. 2015): the gradient with negative signals stopped at every ReLU.
    Kept to show that it fails the model-randomisation sanity check (Adebayo et al. 2018)."""

    name = "guided_backprop"

    def __init__(self, model: nn.Module, *, batch_size: int = 64):
        super().__init__(model, batch_size=batch_size)
        self._guided, count = guided_copy(model)
        if count == 0:
            raise UserError("Guided Backprop needs nn.ReLU/nn.ReLU6 modules; this model has none")

    def attribute(self, x: torch.Tensor, target: TargetSpec = None) -> Attribution:
        x, t = self._prepare(x, target)
        return Attribution(self.name, self._attribute(x, t), t)

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        with gradient_model(self._guided, x, fast=False) as (run, _):
            for s in chunks(x.shape[0], self.batch_size):
                out[s] = input_gradient(run, x[s], targets[s])[0]
        return out
