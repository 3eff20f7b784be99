"""The six tasks of Santurkar et al. 2019 as recipes over the engine (no loop of their own).

Every task is L2 PGD on one (robust) classifier from a task-specific start; the published ε and step sizes
are for 224 px images and scale here with √(H·W)/224 (:func:`procedure`), the step counts stay:

============ ======================================== ============================================= ==== ===== =====
task         start                                    objective (minimised)                         ε    step  steps
============ ======================================== ============================================= ==== ===== =====
generate     class-conditional Gaussian seed          −log p(class)                                 40   1     60
inpaint      hole filled with the per-channel mean    −log p(class) + 10·mean((x − x₀)⊙(1−m))²        21.6 0.1   720
superres     low-res image, nearest-upsampled         −log p(class)                                 8    1     40
translate    image of class A                         −log p(B)                                     80   0.5   200
sketch       a sketch                                 −log p(class)                                 40   1     60
paint        the image                                −0.1·act_m(layer:ch) + 90·mean((x − x₀)⊙(1−m))² 70   1     140
============ ======================================== ============================================= ==== ===== =====

Targeted tasks call :func:`robustlens.recipes.attacks.attack` (8-bit result, success re-checked on it);
inpaint and paint call :func:`robustlens.optim.engine.optimize` with a composed objective and round the result
to 8 bits. Every task is batched (one row per image × target or mask) and seeded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from robustlens import metrics
from robustlens.errors import UserError
from robustlens.images import quantize
from robustlens.models.classifier import Classifier
from robustlens.models.layers import capture
from robustlens.optim.criteria import Targeted
from robustlens.optim.engine import optimize
from robustlens.optim.objectives import Objective, Outputs, PerRow, parse_channel
from robustlens.optim.threat import make_threat
from robustlens.recipes.attacks import attack
from robustlens.recipes.synthesis.objectives import MaskedChannel, SquaredErrorOutside, check_masks, fill_mean
from robustlens.recipes.synthesis.seeds import SeedDistribution

REFERENCE_SIZE = 224  # the published ε are for 224×224 images


@dataclass(frozen=True)
class Procedure:
    """A published setting at 224 px: L2 ``eps`` and ``step_size`` (pixel units), ``steps``."""

    eps: float
    step_size: float
    steps: int

    def scaled(self, height: int, width: int) -> "Procedure":
        """ε and step times √(H·W)/224 (an L2 norm grows with the square root of the pixel count)."""
        s = math.sqrt(height * width) / REFERENCE_SIZE
        return Procedure(self.eps * s, self.step_size * s, self.steps)


PROCEDURES = {"generate": Procedure(40.0, 1.0, 60), "inpaint": Procedure(21.6, 0.1, 720),
              "superres": Procedure(8.0, 1.0, 40), "translate": Procedure(80.0, 0.5, 200),
              "sketch": Procedure(40.0, 1.0, 60), "paint": Procedure(70.0, 1.0, 140)}
INPAINT_WEIGHT = 10.0  # weight of the outside-mask L2 distance
PAINT_WEIGHTS = (0.1, 90.0)  # (activation, outside-mask L2 distance)


def procedure(task: str, size: int | Sequence[int], *, eps: float | None = None, step_size: float | None = None,
              steps: int | None = None) -> Procedure:
    """The published setting of ``task`` scaled to ``size`` px, with any of ε / step / steps overridden."""
    if task not in PROCEDURES:
        raise UserError(f"unknown synthesis task {task!r}; use one of {', '.join(PROCEDURES)}")
    h, w = (size, size) if isinstance(size, int) else (int(size[-2]), int(size[-1]))
    p = PROCEDURES[task].scaled(h, w)
    p = Procedure(p.eps if eps is None else float(eps), p.step_size if step_size is None else float(step_size),
                  p.steps if steps is None else int(steps))
    if not (p.eps > 0 and p.step_size > 0 and p.steps >= 1) or math.isinf(p.eps):
        raise UserError(f"{task}: eps and step size must be finite and > 0 and steps >= 1, got {p}")
    return p


@dataclass
class SynthesisResult:
    """One row per synthesised image. ``starts``/``images`` (N,C,H,W) in [0,1] (``images`` on the 8-bit
    grid); ``targets`` (N,) the class each row is pushed to (None for paint); ``predicted`` (N,) the model's
    top-1 on ``images``; ``target_prob`` (N,) p(target | image) (None for paint); ``l2`` (N,) ‖image − start‖₂;
    ``masks`` (N,1,H,W) for inpaint/paint; ``extra`` per-row figures of the task (e.g. ``activation``)."""

    task: str
    starts: torch.Tensor
    images: torch.Tensor
    targets: torch.Tensor | None
    predicted: torch.Tensor
    target_prob: torch.Tensor | None
    l2: torch.Tensor
    settings: dict
    seconds: float
    history: list[dict] = field(default_factory=list)
    masks: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def success(self) -> torch.Tensor | None:
        """(N,) bool: top-1 is the target."""
        return None if self.targets is None else self.predicted == self.targets

    def to_dict(self) -> dict:
        rows = []
        for i in range(len(self.images)):
            row: dict = {"predicted": int(self.predicted[i]), "l2": float(self.l2[i])}
            if self.targets is not None and self.target_prob is not None:
                row.update(target=int(self.targets[i]), target_prob=float(self.target_prob[i]),
                           success=bool(self.predicted[i] == self.targets[i]))
            row.update({k: metrics.finite_or_none(float(v[i])) for k, v in self.extra.items()})
            rows.append(row)
        summary = {} if self.success is None else {"success_rate": float(self.success.float().mean())}
        return {"task": self.task, "settings": self.settings, "seconds": self.seconds, **summary, "rows": rows}


def _judge(model: nn.Module, images: torch.Tensor, targets: torch.Tensor | None):
    with torch.inference_mode():
        logits = model(images).float()
    probs = logits.softmax(1)
    tp = None if targets is None else probs.gather(1, targets[:, None].to(probs.device)).squeeze(1).clone()
    return logits.argmax(1).clone(), tp


def _targets(targets, n: int, device) -> torch.Tensor:
    t = torch.as_tensor(targets, dtype=torch.long, device=device).reshape(-1)
    if len(t) == 1:
        t = t.expand(n).clone()
    if len(t) != n:
        raise UserError(f"{len(t)} classes for {n} images: give one class, or one per image")
    return t


def _batch(images: torch.Tensor) -> torch.Tensor:
    x = images.unsqueeze(0) if images.dim() == 3 else images
    if x.dim() != 4:
        raise UserError(f"images must be (C,H,W) or (N,C,H,W), got shape {tuple(images.shape)}")
    if x.numel() == 0 or not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise UserError("images must be non-empty, finite and in [0, 1]")
    return x.detach()


def _targeted(task: str, model: nn.Module, starts: torch.Tensor, targets: torch.Tensor, proc: Procedure, *,
              seed: int, progress: bool, settings: dict | None = None) -> SynthesisResult:
    """L2 PGD from ``starts`` (N,C,H,W) towards ``targets`` (N,) with the procedure's ε, step and steps."""
    res = attack(model, starts, target=targets, norm="l2", eps=proc.eps, step_size=proc.step_size,
                 steps=proc.steps, early_stop=False, quantize=True, seed=seed, progress=progress)
    images = res.adversarial
    predicted, tp = _judge(model, images, targets)
    return SynthesisResult(task=task, starts=starts, images=images, targets=targets, predicted=predicted,
                           target_prob=tp, l2=metrics.l2(images - starts), history=res.history,
                           seconds=res.seconds,
                           settings={"eps": proc.eps, "step_size": proc.step_size, "steps": proc.steps,
                                     "norm": "l2", "seed": seed, **(settings or {})})


def generate(model: Classifier, seeds: SeedDistribution, classes: Sequence[int], *, samples: int = 1,
             eps: float | None = None, step_size: float | None = None, steps: int | None = None, seed: int = 0,
             progress: bool = True) -> SynthesisResult:
    """``samples`` images of each of ``classes`` (rows class-major: all of ``classes[0]`` first), in one batch:
    seeds drawn from ``seeds`` (generator seeded with ``seed``), then targeted L2 PGD towards the class."""
    if samples < 1 or not len(classes):
        raise UserError("give at least one class and samples >= 1")
    size = int(model.config.input_size)
    proc = procedure("generate", size, eps=eps, step_size=step_size, steps=steps)
    device = next(model.parameters()).device
    targets = torch.tensor([int(c) for c in classes for _ in range(samples)], dtype=torch.long)
    gen = torch.Generator().manual_seed(int(seed))
    starts = seeds.sample(targets, size=size, generator=gen).to(device)
    return _targeted("generate", model, starts, targets.to(device), proc, seed=seed, progress=progress,
                     settings={"samples": samples, "seed_side": seeds.side, "seed_data": seeds.meta.get("data")})


def super_resolve(model: Classifier, low_res: torch.Tensor, *, labels=None, eps: float | None = None,
                  step_size: float | None = None, steps: int | None = None, seed: int = 0,
                  progress: bool = True) -> SynthesisResult:
    """Nearest-upsample ``low_res`` (N,C,h,w) to the model's input size, then targeted L2 PGD towards
    ``labels`` (default: the model's top-1 on the upsampled image)."""
    low = _batch(low_res)
    size = int(model.config.input_size)
    starts = F.interpolate(low, size=(size, size), mode="nearest")
    proc = procedure("superres", size, eps=eps, step_size=step_size, steps=steps)
    targets = _judge(model, starts, None)[0] if labels is None else _targets(labels, len(starts), starts.device)
    return _targeted("superres", model, starts, targets, proc, seed=seed, progress=progress,
                     settings={"low_res": list(low.shape[-2:]), "upsampling": "nearest"})


def translate(model: nn.Module, images: torch.Tensor, targets, *, eps: float | None = None,
              step_size: float | None = None, steps: int | None = None, seed: int = 0,
              progress: bool = True) -> SynthesisResult:
    """Images (N,C,H,W) of one class turned towards ``targets`` (one class or one per image)."""
    x = _batch(images)
    proc = procedure("translate", tuple(x.shape[-2:]), eps=eps, step_size=step_size, steps=steps)
    return _targeted("translate", model, x, _targets(targets, len(x), x.device), proc, seed=seed,
                     progress=progress)


def sketch_to_image(model: nn.Module, sketches: torch.Tensor, targets, *, eps: float | None = None,
                    step_size: float | None = None, steps: int | None = None, seed: int = 0,
                    progress: bool = True) -> SynthesisResult:
    """Sketches (N,C,H,W) turned into images of ``targets`` (one class or one per sketch)."""
    x = _batch(sketches)
    proc = procedure("sketch", tuple(x.shape[-2:]), eps=eps, step_size=step_size, steps=steps)
    return _targeted("sketch", model, x, _targets(targets, len(x), x.device), proc, seed=seed, progress=progress)


def _pair(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One image with k masks, k images with one mask, or k of each: (k,C,H,W), (k,1,H,W)."""
    x = _batch(images)
    m = masks.float()
    while m.dim() < 4:
        m = m.unsqueeze(0)
    n = max(x.shape[0], m.shape[0])
    if x.shape[0] not in (1, n) or m.shape[0] not in (1, n):
        raise UserError(f"{m.shape[0]} masks for {x.shape[0]} images: give one of either, or as many of each")
    x = x.expand(n, *x.shape[1:]).clone()
    return x, check_masks(m, x).to(x.device).expand(n, -1, -1, -1).clone()


def _optimised(task: str, model: nn.Module, starts: torch.Tensor, objective: Objective, proc: Procedure, *,
               seed: int, progress: bool) -> tuple[torch.Tensor, list[dict], float]:
    res = optimize(model, starts, objective, threat=make_threat("l2", proc.eps), steps=proc.steps,
                   step_size=proc.step_size, seed=seed, progress=progress, desc=task)
    return res.x, res.history, res.seconds


def inpaint(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, *, labels=None,
            weight: float = INPAINT_WEIGHT, paste: bool = True, eps: float | None = None,
            step_size: float | None = None, steps: int | None = None, seed: int = 0,
            progress: bool = True) -> SynthesisResult:
    """Fill the holes ``masks`` (1 = hole; (N or 1,1,H,W)) of ``images`` (N or 1,C,H,W): start from the image
    with the hole mean-filled (:func:`fill_mean`), minimise −log p(label) + ``weight``·mean((x − x₀)⊙(1−m))² in the
    L2 ball around the start. The pixels of the hole are never read. ``labels`` default to the model's top-1
    on the filled image. With ``paste`` (default) the pixels outside the hole are set back to the input's, so
    they differ from it by at most half an 8-bit level (the rounding); ``extra["outside_change"]`` is the
    largest change outside the hole before pasting."""
    x, m = _pair(images, masks)
    starts = fill_mean(x, m)
    proc = procedure("inpaint", tuple(x.shape[-2:]), eps=eps, step_size=step_size, steps=steps)
    targets = _judge(model, starts, None)[0] if labels is None else _targets(labels, len(x), x.device)
    objective = Targeted(targets).objective("ce") + weight * SquaredErrorOutside(starts, m)
    out, history, seconds = _optimised("inpaint", model, starts, objective, proc, seed=seed, progress=progress)
    outside_change = ((out - x).abs() * (1 - m)).flatten(1).amax(1)
    images_out = quantize(m * out + (1 - m) * x if paste else out)
    predicted, tp = _judge(model, images_out, targets)
    return SynthesisResult(task="inpaint", starts=starts, images=images_out, targets=targets, predicted=predicted,
                           target_prob=tp, l2=metrics.l2(images_out - starts), history=history, seconds=seconds,
                           masks=m, extra={"outside_change": outside_change},
                           settings={"eps": proc.eps, "step_size": proc.step_size, "steps": proc.steps,
                                     "norm": "l2", "weight": weight, "paste": paste, "seed": seed})


def paint_features(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, features: str | Sequence[str], *,
                   weights: tuple[float, float] = PAINT_WEIGHTS, eps: float | None = None,
                   step_size: float | None = None, steps: int | None = None, seed: int = 0,
                   progress: bool = True) -> SynthesisResult:
    """Paint feature ``"layer:channel"`` (one, or one per row) into the regions ``masks`` (1 = paint there) of
    ``images``: minimise −a·act_m + b·mean((x − x₀)⊙(1−m))² with (a, b) = ``weights`` (untargeted), where act_m is
    the channel's mean activation over the mask (:class:`MaskedChannel`). ``extra`` has the activation before
    (``activation_start``) and after (``activation``)."""
    x, m = _pair(images, masks)
    specs = [features] * len(x) if isinstance(features, str) else list(features)
    if len(specs) != len(x):
        raise UserError(f"{len(specs)} features for {len(x)} rows: give one, or one per row")
    parts = [MaskedChannel(*parse_channel(s), m) for s in specs]
    act: Objective = parts[0] if len(set(specs)) == 1 else PerRow(list(parts))
    objective = weights[0] * act + weights[1] * SquaredErrorOutside(x, m)
    proc = procedure("paint", tuple(x.shape[-2:]), eps=eps, step_size=step_size, steps=steps)
    before = _activations(model, x, act)
    out, history, seconds = _optimised("paint", model, x, objective, proc, seed=seed, progress=progress)
    images_out = quantize(out)
    predicted, _ = _judge(model, images_out, None)
    return SynthesisResult(task="paint", starts=x, images=images_out, targets=None, predicted=predicted,
                           target_prob=None, l2=metrics.l2(images_out - x), history=history, seconds=seconds,
                           masks=m, extra={"activation_start": before, "activation": _activations(model, images_out, act)},
                           settings={"eps": proc.eps, "step_size": proc.step_size, "steps": proc.steps, "norm": "l2",
                                     "features": specs, "weights": list(weights), "seed": seed})


def _activations(model: nn.Module, images: torch.Tensor, act: Objective) -> torch.Tensor:
    """(N,) the masked activation that ``act`` (a :class:`MaskedChannel` or a PerRow of them) maximises."""
    with torch.inference_mode(), capture(model, act.layers) as acts:
        logits = model(images)
    out = Outputs(x=images, logits=logits, activations=acts, index=torch.arange(len(images), device=images.device))
    return (-act(out)).float().clone()
