"""Random, differentiable image transforms applied before the model at each optimisation step.

A transform is a function ``(x, generator) -> x`` on (N,C,H,W) batches (one random draw per batch); the
makers below return such functions and :func:`compose` chains them. Feature visualisation and DeepDream use
them so the image must work under small shifts, zooms and rotations (transformation robustness), which
removes high-frequency adversarial patterns. Randomness comes only from the generator passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _randint(low: int, high: int, gen: torch.Generator) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=gen, device=gen.device))


def _choice(values: Sequence[float], gen: torch.Generator) -> float:
    return float(values[_randint(0, len(values) - 1, gen)])


def jitter(pixels: int) -> Transform:
    """Shift by up to ``pixels`` in each direction, wrapping around (``torch.roll``; keeps the size)."""

    def t(x, gen):
        dy, dx = _randint(-pixels, pixels, gen), _randint(-pixels, pixels, gen)
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))

    return t


def pad(pixels: int, mode: str = "reflect") -> Transform:
    """Pad every side by ``pixels`` (``reflect``, ``replicate`` or ``constant`` grey 0.5)."""

    def t(x, gen):
        if mode == "constant":
            return F.pad(x, (pixels,) * 4, mode="constant", value=0.5)
        return F.pad(x, (pixels,) * 4, mode=mode)

    return t


def scale(factors: Sequence[float]) -> Transform:
    """Resize by a factor drawn from ``factors`` (bilinear; the size changes)."""

    def t(x, gen):
        f = _choice(factors, gen)
        if f == 1.0:
            return x
        size = (max(1, round(x.shape[-2] * f)), max(1, round(x.shape[-1] * f)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    return t


def rotate(degrees: Sequence[float]) -> Transform:
    """Rotate about the centre by an angle drawn from ``degrees`` (bilinear, border pixels repeated)."""

    def t(x, gen):
        a = math.radians(_choice(degrees, gen))
        if a == 0.0:
            return x
        c, s = math.cos(a), math.sin(a)
        theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    return t


def compose(*transforms: Transform) -> Transform:
    """Apply ``transforms`` in order."""

    def t(x, gen):
        for tr in transforms:
            x = tr(x, gen)
        return x

    return t


def standard() -> Transform:
    """Pad, jitter, zoom ±5 %, rotate ±10°, jitter (the usual recipe for feature visualisation)."""
    return compose(pad(12, "constant"), jitter(8), scale([1 + (i - 5) / 100 for i in range(11)]),
                   rotate(list(range(-10, 11))), jitter(4))
