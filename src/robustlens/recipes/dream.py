"""DeepDream (Mordvintsev et al. 2015): amplify whatever a layer sees in an image, over octaves.

Gradient ascent on the squared activations of one layer (:class:`robustlens.optim.objectives.ActivationEnergy`), each step
normalised by the mean absolute gradient (:class:`robustlens.optim.threat.Unconstrained`), under random jitter.
Octaves: start at the smallest scale of an image pyramid; after each octave the *detail* the dream added is
upsampled onto the next, larger copy of the original; so large structures form first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.errors import UserError
from robustlens.models.layers import resolve_layer
from robustlens.optim.engine import optimize
from robustlens.optim.objectives import ActivationEnergy
from robustlens.optim.threat import Unconstrained
from robustlens.optim.transforms import jitter

MIN_OCTAVE_SIZE = 32


@dataclass
class DreamResult:
    """``image`` (1,C,H,W) the dream at full size; ``original`` the input; ``octave_sizes`` (H, W) per octave;
    ``history`` the engine's per-step records, each with its ``octave``."""

    image: torch.Tensor
    original: torch.Tensor
    layer: str
    octave_sizes: list[tuple[int, int]]
    history: list[dict]
    seconds: float
    settings: dict

    def to_dict(self) -> dict:
        return {"settings": self.settings, "seconds": self.seconds,
                "octave_sizes": [list(s) for s in self.octave_sizes],
                "start_mean_square_activation": -self.history[0]["loss"] if self.history else None,
                "final_mean_square_activation": -self.history[-1]["loss"] if self.history else None,
                "history": self.history}


def octave_sizes(h: int, w: int, octaves: int, octave_scale: float) -> list[tuple[int, int]]:
    """Image sizes from the smallest octave to the full size."""
    return [(max(1, round(h / octave_scale ** k)), max(1, round(w / octave_scale ** k)))
            for k in reversed(range(octaves))]


def check_octaves(h: int, w: int, octaves: int, octave_scale: float) -> list[tuple[int, int]]:
    """:func:`octave_sizes`, or a :class:`UserError` if the smallest octave is under ``MIN_OCTAVE_SIZE``."""
    sizes = octave_sizes(h, w, octaves, octave_scale)
    if min(sizes[0]) < MIN_OCTAVE_SIZE:
        raise UserError(f"the smallest octave would be {sizes[0][0]}x{sizes[0][1]} pixels (< {MIN_OCTAVE_SIZE}): "
                        "use fewer octaves or a smaller octave scale")
    return sizes


def dream(
    model: nn.Module,
    image: torch.Tensor,
    layer: str,
    *,
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps: int = 10,
    step_size: float = 0.01,
    jitter_pixels: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> DreamResult:
    """Dream on ``image`` ((C,H,W) or (1,C,H,W) in [0,1]) at ``layer``: ``steps`` ascent steps per octave,
    each moving an average pixel by ``step_size``; ``octaves`` scales ``octave_scale`` apart."""
    resolve_layer(model, layer)
    if octaves < 1:
        raise UserError(f"octaves must be at least 1, got {octaves}")
    if steps < 1:
        raise UserError(f"steps must be at least 1, got {steps}")
    if octave_scale < 1:
        raise UserError(f"octave scale must be at least 1, got {octave_scale}")
    x = (image.unsqueeze(0) if image.dim() == 3 else image).detach()
    sizes = check_octaves(x.shape[-2], x.shape[-1], octaves, octave_scale)
    detail = torch.zeros(*x.shape[:2], *sizes[0], device=x.device, dtype=x.dtype)
    history: list[dict] = []
    seconds = 0.0
    for k, size in enumerate(sizes):
        base = x if size == tuple(x.shape[-2:]) else F.interpolate(x, size=size, mode="bilinear",
                                                                    align_corners=False, antialias=True)
        if detail.shape[-2:] != base.shape[-2:]:
            detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
        res = optimize(model, (base + detail).clamp(0, 1), ActivationEnergy(layer), threat=Unconstrained(), steps=steps,
                       step_size=step_size, transforms=jitter(max(1, round(jitter_pixels * size[0] / sizes[-1][0]))),
                       seed=seed + k, progress=progress, desc=f"dream octave {k + 1}/{octaves}")
        detail = res.x - base
        history += [{**h, "octave": k} for h in res.history]
        seconds += res.seconds
    settings = {"layer": layer, "octaves": octaves, "octave_scale": octave_scale, "steps": steps,
                "step_size": step_size, "jitter": jitter_pixels, "seed": seed}
    return DreamResult(image=res.x, original=x, layer=layer, octave_sizes=sizes, history=history, seconds=seconds,
                       settings=settings)
