"""Model preparation for one optimisation, as one context manager taking one :class:`~robustlens.optim.speed.Speed`.

Within ``with prepare(model, x0, settings, hooks=...) as net:``

- every parameter of ``model`` has ``requires_grad=False`` (gradients are taken w.r.t. the input only); the
  flags are restored on exit;
- ``net.forward(x)`` runs the fastest faithful version of the model: a private copy with BatchNorm folded into
  the convolutions when no hooks are needed (``settings.fold_bn``), channels-last weights and inputs
  (``settings.channels_last``), bf16 autocast where measured safe (``settings.precision``), optionally
  ``torch.compile`` (``settings.compile``);
- ``net.exact(x)`` runs the same network in float32 without autocast — the pass that decides what counts;
- the model's train/eval mode is left as it is, and its memory format is restored on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

import robustlens.optim.fold as fold
import robustlens.optim.speed as speed


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block every parameter has ``requires_grad=False``; the flags are restored on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, f in flags:
            p.requires_grad_(f)


@dataclass
class PreparedModel:
    """``model`` the user's model; ``net`` what the fast passes run; ``fmt`` the input memory format;
    ``amp`` the autocast dtype of the fast passes (None: float32)."""

    model: nn.Module
    net: nn.Module
    fmt: torch.memory_format
    amp: torch.dtype | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) of the fast pass, as float32."""
        with speed.autocast(x.device, self.amp):
            return self.net(speed.in_format(x, self.fmt)).float()

    def exact(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) in float32, without autocast: the fast network (the model, or its BatchNorm-folded
        copy: the same function up to float rounding) — the pass whose verdicts count."""
        return self.net(speed.in_format(x, self.fmt)).float()

    @property
    def fast_is_exact(self) -> bool:
        return self.amp is None


@contextlib.contextmanager
def prepare(model: nn.Module, x0: torch.Tensor, settings: speed.Speed, *, hooks: bool) -> Iterator[PreparedModel]:
    """Prepare ``model`` for optimising inputs like ``x0`` under ``settings``; ``hooks``: the objective reads
    inner layers (forward hooks must run, so no folded copy)."""
    cl = speed.use_channels_last(model, x0, settings.channels_last)
    amp = speed.autocast_dtype(model, settings.precision, x0.device)
    with contextlib.ExitStack() as stack:
        stack.enter_context(frozen(model))
        net = model
        if settings.fold_bn and not hooks:
            net = fold.prepared(model, x0, channels_last=cl)
        if net is model:
            stack.enter_context(speed.channels_last_model(model, enabled=cl))
        if settings.compile:
            net = speed.compiled(net)
        yield PreparedModel(model=model, net=net, fmt=torch.channels_last if cl else torch.contiguous_format,
                            amp=amp)
