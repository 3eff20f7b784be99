"""Feature visualisation (Olah et al. 2017): an image that maximises a channel, neuron or any objective.

Adam on a parameterised image (FFT spectrum with decorrelated colour by default, see :mod:`robustlens.optim.param`)
from near-grey noise, under random pad/jitter/zoom/rotation (:func:`robustlens.optim.transforms.standard`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robustlens.errors import UserError
from robustlens.models.layers import get_activations, resolve_layer
from robustlens.optim.engine import optimize
from robustlens.optim.objectives import Channel, Objective, Outputs, as_objective
from robustlens.optim.param import PARAMS, make_param
from robustlens.optim.steps import Adam
from robustlens.optim.threat import Unconstrained
from robustlens.optim.transforms import standard


@dataclass
class VisualizeResult:
    """``images`` (N,C,H,W) in [0,1]; ``value`` (N,) the objective's value on them, negated (so: the mean
    activation of the channel) without transforms; ``history``; ``seconds``; ``settings``."""

    images: torch.Tensor
    value: torch.Tensor
    start_value: torch.Tensor
    history: list[dict]
    seconds: float
    settings: dict

    def to_dict(self) -> dict:
        return {"settings": self.settings, "seconds": self.seconds, "value": [float(v) for v in self.value],
                "start_value": [float(v) for v in self.start_value], "history": self.history}


def _channels(model: nn.Module, layer: str, size: int, device) -> int:
    with torch.inference_mode():
        a = get_activations(model, torch.zeros(1, 3, size, size, device=device), [layer])[layer]
    return a.shape[1]


def check_objective(model: nn.Module, objective: Objective, size: int) -> None:
    """Every layer exists (UserError with close names) and every channel index is in range."""
    for name in objective.layers:
        resolve_layer(model, name)
    parts = getattr(objective, "parts", (objective,))
    device = next(model.parameters()).device
    for p in parts:
        inner = getattr(p, "inner", p)
        if isinstance(inner, Channel):
            n = _channels(model, inner.layer, size, device)
            if not 0 <= inner.channel < n:
                raise UserError(f"channel {inner.channel} is out of range: layer {inner.layer} has {n} channels "
                                f"(0..{n - 1})")


def _value(model: nn.Module, objective: Objective, x: torch.Tensor) -> torch.Tensor:
    from robustlens.models.layers import capture

    with torch.inference_mode(), capture(model, objective.layers) as acts:
        logits = model(x)
        v = -objective(Outputs(x=x, logits=logits, activations=acts))
    return v.clone()


def visualize(
    model: nn.Module,
    objective: str | Objective,
    *,
    param: str = "fft",
    decorrelate: bool = True,
    size: int | None = None,
    batch: int = 1,
    steps: int = 256,
    lr: float = 0.05,
    transforms: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> VisualizeResult:
    """Images that maximise ``objective`` (``"layer:channel"`` or an :class:`Objective`, minimised).

    ``param`` ``"fft"`` or ``"pixel"``; ``size`` defaults to the model's input size; ``batch`` images from
    different random starts."""
    if param not in PARAMS:
        raise UserError(f"unknown parameterisation {param!r}; use one of {', '.join(PARAMS)}")
    if steps < 1:
        raise UserError(f"steps must be at least 1, got {steps}")
    if batch < 1:
        raise UserError(f"batch must be at least 1, got {batch}")
    config = getattr(model, "config", None)
    size = size or (config.input_size if config else 224)
    obj = as_objective(objective)
    check_objective(model, obj, size)
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(int(seed))
    x0 = (0.5 + 0.05 * torch.randn(batch, 3, size, size, generator=gen, device=device)).clamp(0, 1)
    res = optimize(model, x0, obj, threat=Unconstrained(), steps=steps, rule=Adam(lr),
                   param=make_param(param, decorrelate=decorrelate), transforms=standard() if transforms else None,
                   seed=seed, progress=progress, desc="visualize")
    settings = {"objective": objective if isinstance(objective, str) else repr(obj), "param": param,
                "decorrelate": decorrelate, "size": size, "batch": batch, "steps": steps, "lr": lr,
                "transforms": transforms, "seed": seed}
    return VisualizeResult(images=res.x, value=_value(model, obj, res.x), start_value=_value(model, obj, x0),
                           history=res.history, seconds=res.seconds, settings=settings)
