"""Weight averaging for training: an exponential moving average (EMA) of the network's weights.

Adversarial training overfits: after the first epochs the robust accuracy on held-out images stops rising
while the one on the training images keeps climbing ("robust overfitting", Rice, Wong & Kolter, 2020). An
average of the weights along the trajectory generalises better, for robust accuracy especially (Gowal et al.,
"Uncovering the limits of adversarial training", 2020, §4; the practice of timm's ``ModelEmaV2`` for standard
training). :class:`WeightAverage` keeps that average in float32 beside the network:

    avg ← d·avg + (1 − d)·w,   d = min(decay, (1 + t) / (10 + t))   after optimiser step t

(the ramp keeps the random start from dominating the first steps). Every floating-point parameter and buffer
is averaged, the BatchNorm running statistics included; integer buffers (``num_batches_tracked``) are the
network's own. Under DDP every rank holds the same weights after each step, hence the same average.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from robustlens.errors import UserError


class WeightAverage:
    """An EMA of ``net``'s floating-point state (``decay`` in (0, 1), e.g. 0.999; see the module doc)."""

    def __init__(self, net: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise UserError(f"the weight-average decay must be in (0, 1), not {decay}")
        self.decay = decay
        self.tensors = {k: v.detach().float().clone() for k, v in net.state_dict().items() if v.is_floating_point()}

    def decay_at(self, step: int) -> float:
        """The decay used after optimiser step ``step`` (0-based)."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        """Fold the network's current weights in, after optimiser step ``step``."""
        w = 1.0 - self.decay_at(step)
        for k, v in net.state_dict().items():
            avg = self.tensors.get(k)
            if avg is not None:
                avg.lerp_(v.detach().float(), w)

    @contextmanager
    def swapped_in(self, net: nn.Module) -> Iterator[nn.Module]:
        """Within the block ``net`` holds the averaged weights (in its own dtypes and memory layouts); on exit
        its own weights are back, bit for bit."""
        state = net.state_dict()
        saved = {k: state[k].detach().clone() for k in self.tensors}
        self.copy_to(net)
        try:
            yield net
        finally:
            with torch.no_grad():
                for k, v in saved.items():
                    state[k].copy_(v)

    @torch.no_grad()
    def copy_to(self, net: nn.Module) -> None:
        """Put the averaged weights into ``net`` for good (the end of training)."""
        state = net.state_dict()
        for k, avg in self.tensors.items():
            state[k].copy_(avg)

    def state_tensors(self, prefix: str = "ema.") -> dict[str, torch.Tensor]:
        """The averaged tensors, keyed ``prefix + name`` (how a checkpoint stores them)."""
        return {prefix + k: v.contiguous() for k, v in self.tensors.items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor], prefix: str = "ema.", *, source: str = "") -> None:
        """Restore from :meth:`state_tensors`' output (other keys ignored); every averaged name must be there."""
        missing = [k for k in self.tensors if prefix + k not in tensors]
        if missing:
            raise UserError(f"{source or 'the checkpoint'} has no weight average for {', '.join(missing[:3])}"
                            + (" ..." if len(missing) > 3 else "") + " (was it trained without --ema?)")
        for k in self.tensors:
            self.tensors[k].copy_(tensors[prefix + k].float())
