"""Feature inversion (Mahendran & Vedaldi): which images does the model map to the same features at a layer?

From a noise image (``start="uniform"``: U(0,1) per pixel; ``"gray"``: mid-gray plus N(0, 0.05²), clipped to
[0,1] — the seed of MadryLab robustness's inversion example), minimise the relative squared L2 distance
‖φ_L(x) − φ_L(x_ref)‖² / ‖φ_L(x_ref)‖² at each requested layer. All layers run in ONE batch: the same noise
start is replicated, one row per layer, and one forward pass per step serves every row
(:class:`robustlens.optim.objectives.PerRow`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from robustlens.checks import count, positive
from robustlens.errors import UserError
from robustlens.models.layers import get_activations, resolve_layer
from robustlens.optim.engine import optimize
from robustlens.optim.objectives import FeatureDistance, PerRow, TotalVariation
from robustlens.optim.speed import Speed
from robustlens.optim.steps import SCHEDULES, Adam
from robustlens.optim.threat import Unconstrained


@dataclass
class InversionResult:
    """``reference`` (1,C,H,W); ``images`` (L,C,H,W) one reconstruction per layer; ``start_distance`` and
    ``distance`` (L,) relative L2 feature distances ‖φ(x) − φ(ref)‖/‖φ(ref)‖ of the noise start and of the
    result; ``history``, ``seconds``, ``settings``."""

    layers: list[str]
    reference: torch.Tensor
    images: torch.Tensor
    start_distance: torch.Tensor
    distance: torch.Tensor
    history: list[dict]
    seconds: float
    settings: dict

    @property
    def drop(self) -> torch.Tensor:
        """(L,) fraction of the start distance removed: 1 − distance / start_distance."""
        return 1 - self.distance / self.start_distance

    def to_dict(self) -> dict:
        return {"settings": self.settings, "seconds": self.seconds,
                "layers": [{"layer": n, "start_distance": float(s), "distance": float(d), "drop": float(r)}
                           for n, s, d, r in zip(self.layers, self.start_distance, self.distance, self.drop)],
                "history": self.history}


def feature_distances(model: nn.Module, x: torch.Tensor, reference: dict[str, torch.Tensor],
                      layers: Sequence[str]) -> torch.Tensor:
    """(L,) relative L2 distance of row i of ``x`` to the reference features at ``layers[i]``."""
    with torch.inference_mode():
        acts = get_activations(model, x, list(dict.fromkeys(layers)))
        out = []
        for i, name in enumerate(layers):
            a, r = acts[name][i].flatten().float(), reference[name][0].flatten().float()
            out.append(torch.linalg.vector_norm(a - r) / torch.linalg.vector_norm(r).clamp_min(1e-12))
    return torch.stack(out).clone()


STARTS = {"uniform": "uniform noise", "gray": "gray + N(0, 0.05^2) noise"}


def noise_image(shape: Sequence[int], start: str, generator: torch.Generator, *, device=None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A seeded noise image in [0,1] of ``shape``: ``start`` ``"uniform"`` (U(0,1) per pixel) or ``"gray"``
    (0.5 + N(0, 0.05²) per pixel, clipped: far less high-frequency energy for the optimisation to remove)."""
    if start == "uniform":
        return torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    if start == "gray":
        noise = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
        return (0.5 + noise / 20).clamp_(0, 1)
    raise UserError(f"start must be one of {', '.join(STARTS)}, got {start!r}")


def invert(
    model: nn.Module,
    image: torch.Tensor,
    layers: Sequence[str],
    *,
    steps: int = 200,
    lr: float = 0.1,
    schedule: str = "cosine",
    tv_weight: float = 0.0,
    seed: int = 0,
    start: str = "uniform",
    progress: bool = True,
    speed: Speed | None = None,
) -> InversionResult:
    """Reconstruct ``image`` ((C,H,W) or (1,C,H,W) in [0,1]) from its features at each of ``layers``.

    Pixel-space Adam (learning rate ``lr``; ``schedule`` ``"cosine"`` decays it to 0, or ``"constant"``) from
    seeded noise (``start``: ``"uniform"`` or ``"gray"``, :func:`noise_image`), kept in [0,1]; ``tv_weight``
    adds a total-variation prior (0: the pure feature objective). One reconstruction per layer."""
    layers = list(layers)
    if not layers:
        raise UserError("give at least one layer")
    count("steps", steps)
    positive("lr", lr)
    positive("tv_weight", tv_weight, allow_zero=True)
    if schedule not in SCHEDULES:
        raise UserError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if start not in STARTS:
        raise UserError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    for name in layers:
        resolve_layer(model, name)  # unknown names raise UserError with close matches
    ref_img = image.unsqueeze(0) if image.dim() == 3 else image
    if ref_img.shape[0] != 1:
        raise UserError(f"invert takes one image, got a batch of {ref_img.shape[0]}")
    ref_img = ref_img.detach()
    with torch.inference_mode():
        acts = get_activations(model, ref_img, list(dict.fromkeys(layers)))
    reference = {n: a.clone() for n, a in acts.items()}

    gen = torch.Generator(device=ref_img.device).manual_seed(int(seed))
    noise = noise_image(ref_img.shape, start, gen, device=ref_img.device, dtype=ref_img.dtype)
    first = noise.expand(len(layers), *noise.shape[1:]).clone()
    objective = PerRow([FeatureDistance(n, reference[n]) for n in layers])
    if tv_weight:
        objective = objective + tv_weight * TotalVariation()
    start_distance = feature_distances(model, first, reference, layers)
    res = optimize(model, first, objective, threat=Unconstrained(), steps=steps,
                   rule=Adam(lr, schedule=SCHEDULES[schedule]()), seed=seed, progress=progress, speed=speed,
                   desc="invert")
    distance = feature_distances(model, res.x, reference, layers)
    settings = {"layers": layers, "steps": steps, "lr": lr, "tv_weight": tv_weight, "seed": seed,
                "start": STARTS[start], "step_rule": "adam", "schedule": schedule,
                "objective": "relative squared L2 feature distance"}
    return InversionResult(layers=layers, reference=ref_img, images=res.x, start_distance=start_distance,
                           distance=distance, history=res.history, seconds=res.seconds, settings=settings)
