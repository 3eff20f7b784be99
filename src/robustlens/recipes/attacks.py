"""Adversarial attacks: thin recipes over :func:`robustlens.optim.engine.optimize`.

- :func:`pgd` / :func:`fgsm`: tensors in, adversarial tensors out (what robust evaluation and adversarial
  training call).
- :func:`attack`: the user-facing attack with predictions, norms, image-quality figures and an 8-bit-safe
  result (see :class:`AttackResult`).
- :class:`EightBit`: the returned form of an iterate — rounded to the 8-bit grid (what a PNG stores) inside
  the threat set. The engine judges every success on it, so early stop never stops on a success that
  rounding undoes.

ε and step sizes are in [0, 1] pixel units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robustlens import metrics
from robustlens.checks import finite, positive
from robustlens.errors import UserError
from robustlens.images import quantize
from robustlens.metrics import finite_or_none
from robustlens.models.classify import Prediction, topk
from robustlens.optim.criteria import LOSSES, Criterion, Targeted, Untargeted
from robustlens.optim.engine import optimize
from robustlens.optim.speed import Speed
from robustlens.optim.starts import AtInput, RandomInThreat
from robustlens.optim.steps import SteepestStep, madry_step_size
from robustlens.optim.threat import ThreatModel, make_threat


def criterion_for(classes: int | list[int] | torch.Tensor, *, targeted: bool) -> Criterion:
    """:class:`Targeted` towards ``classes`` or :class:`Untargeted` away from them."""
    return Targeted(classes) if targeted else Untargeted(classes)


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
    quantize: bool = False,
    progress: bool = False,
    speed: Speed | None = None,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al.). ``x`` (N,C,H,W) in [0,1]; ``y`` (N,) true labels
    (untargeted: maximise their CE) or target labels (``targeted``: maximise their log-probability).

    Returns the adversarial images (same shape as ``x``, detached): per example the best iterate over all
    steps and restarts — a successful one if any, else the one with the highest attack loss — inside
    the ε-ball around ``x`` and [0,1]. Model parameters and train/eval mode are left as they were. With
    ``quantize`` the images are on the 8-bit grid and every success is judged there (:class:`EightBit`).
    ``speed``: see :func:`robustlens.optim.engine.optimize` (None: the settings in force).

    Example:

    ```pycon
    >>> import torch
    >>> from robustlens.models import create_model
    >>> from robustlens.recipes import pgd
    >>> model = create_model("mnist_lenet5", "none", seed=0)
    >>> x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    >>> y = torch.tensor([0, 1, 2, 3])
    >>> adv = pgd(model, x, y, eps=0.1, steps=5, step_size=0.025)
    >>> adv.shape, bool((adv - x).abs().max() <= 0.1 + 1e-6)
    (torch.Size([4, 1, 28, 28]), True)

    ```
    """
    y = torch.as_tensor(y, dtype=torch.long, device=x.device).reshape(-1)
    if y.numel() not in (1, x.shape[0]):
        raise ValueError(f"y has {y.numel()} labels for {x.shape[0]} images")
    eps, _ = _check_attack(eps=eps, step_size=step_size, steps=steps, restarts=restarts, loss=loss)
    threat = make_threat(norm, eps)
    criterion = criterion_for(y, targeted=targeted)
    res = optimize(model, x, criterion.objective(loss), threat=threat, steps=steps, rule=SteepestStep(float(step_size)),
                   start=RandomInThreat() if random_start else AtInput(), restarts=restarts, criterion=criterion,
                   early_stop=early_stop, output=EightBit(threat) if quantize else None, seed=seed,
                   progress=progress, history=False, speed=speed, desc="pgd")
    return res.x


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf", eps: float,
         targeted: bool = False, loss: str = "ce", progress: bool = False, speed: Speed | None = None) -> torch.Tensor:
    """Fast gradient (sign) method: :func:`pgd` with one step of size ``eps`` from ``x`` (no random start).

    Like :func:`pgd` it returns the better of the two iterates it evaluates (x itself and x + step), so an
    example whose step lowered the attack loss without succeeding comes back unchanged.

    Example:

    ```pycon
    >>> import torch
    >>> from robustlens.models import create_model
    >>> from robustlens.recipes import fgsm
    >>> model = create_model("mnist_lenet5", "none", seed=0)
    >>> x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    >>> adv = fgsm(model, x, torch.tensor([0, 1]), eps=0.1)
    >>> bool((adv - x).abs().max() <= 0.1 + 1e-6)
    True

    ```
    """
    return pgd(model, x, y, norm=norm, eps=eps, step_size=eps, steps=1, targeted=targeted, random_start=False,
               loss=loss, progress=progress, speed=speed)


# --- the user-facing attack -------------------------------------------------------------------------------

@dataclass
class AttackResult:
    """One row per attacked image (several targets for one image are several rows).

    ``original``/``adversarial``/``perturbation`` (N,C,H,W); ``targets`` (N,) or None (untargeted);
    ``labels`` (N,) the classes an untargeted attack moves away from; ``success`` (N,) bool, checked on the
    returned (by default 8-bit quantised) images; ``before``/``after`` top-5 predictions per row; ``linf``,
    ``l2`` (N,) perturbation norms in pixel units; ``psnr`` (dB) and ``ssim`` (N,); ``history`` the engine's
    per-step history; ``steps_run`` gradient steps of the batch, ``example_steps`` summed over rows;
    ``settings`` the attack's parameters."""

    original: torch.Tensor
    adversarial: torch.Tensor
    targets: torch.Tensor | None
    labels: torch.Tensor
    success: torch.Tensor
    before: list[list[Prediction]]
    after: list[list[Prediction]]
    linf: torch.Tensor
    l2: torch.Tensor
    psnr: torch.Tensor
    ssim: torch.Tensor
    history: list[dict]
    steps_run: int
    example_steps: int
    seconds: float
    settings: dict

    @property
    def perturbation(self) -> torch.Tensor:
        return self.adversarial - self.original

    @property
    def targeted(self) -> bool:
        return self.targets is not None

    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self.success) else 0.0

    def to_dict(self) -> dict:
        rows = []
        for i in range(len(self.success)):
            rows.append({
                "target": int(self.targets[i]) if self.targets is not None else None,
                "label": int(self.labels[i]),
                "success": bool(self.success[i]),
                "linf": float(self.linf[i]), "linf_255": float(self.linf[i]) * 255, "l2": float(self.l2[i]),
                "psnr_db": finite_or_none(float(self.psnr[i])), "ssim": float(self.ssim[i]),
                "before": [p.to_dict() for p in self.before[i]],
                "after": [p.to_dict() for p in self.after[i]],
            })
        return {"settings": self.settings, "success_rate": self.success_rate(), "steps_run": self.steps_run,
                "example_steps": self.example_steps, "seconds": self.seconds, "results": rows, "history": self.history}


def quantize_in_ball(adv: torch.Tensor, x0: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """Round ``adv`` to the 8-bit grid (what a PNG stores) without leaving the threat set.

    Nearest rounding first; an example that it pushes out of the ball is rounded towards x₀ instead
    (never lengthens any coordinate of the perturbation when x₀ is on the grid — every image read from a
    file is). If x₀ is off the grid and that is still outside, the example is projected (off-grid).

    Example:

    ```pycon
    >>> import torch
    >>> from robustlens.optim import make_threat
    >>> from robustlens.recipes import quantize_in_ball
    >>> x0 = torch.full((1, 3, 2, 2), 100 / 255)
    >>> q = quantize_in_ball(x0 + 0.013, x0, make_threat("linf", 4 / 255))
    >>> sorted({round(v * 255, 4) for v in q.flatten().tolist()})  # on the 8-bit grid, still in the ball
    [103.0]

    ```
    """
    q = quantize(adv)
    out = ~threat.contains(q, x0)
    if bool(out.any()):
        towards = quantize(x0 + torch.trunc((adv - x0) * 255.0) / 255.0)
        q[out] = towards[out]
        out = ~threat.contains(q, x0)
        if bool(out.any()):
            q[out] = threat.project(q[out], x0[out])
    return q


class EightBit:
    """The returned form of an iterate: :func:`quantize_in_ball` for ``threat`` (an output map for the engine)."""

    def __init__(self, threat: ThreatModel):
        self.threat = threat

    def __call__(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return quantize_in_ball(x, x0, self.threat)

    def __repr__(self) -> str:
        return f"EightBit({self.threat!r})"


def _as_batch(images: torch.Tensor) -> torch.Tensor:
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"images must be (C,H,W) or (N,C,H,W), got shape {tuple(images.shape)}")
    return images


def _pair_targets(x: torch.Tensor, target, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images and per-row targets: one image with k targets becomes a batch of k rows."""
    if target is None:
        return x, None
    t = torch.as_tensor(target, dtype=torch.long, device=device).reshape(-1)
    if len(t) == 0:
        raise ValueError("target is empty")
    if len(t) == 1:
        return x, t.expand(x.shape[0]).clone()
    if x.shape[0] == 1:
        return x.expand(len(t), *x.shape[1:]).clone(), t
    if x.shape[0] != len(t):
        raise ValueError(f"{len(t)} targets for {x.shape[0]} images: give one target, one per image, or one image")
    return x, t


def attack(
    model: nn.Module,
    images: torch.Tensor,
    *,
    target: int | list[int] | torch.Tensor | None = None,
    labels: int | list[int] | torch.Tensor | None = None,
    norm: str = "linf",
    eps: float = 4 / 255,
    step_size: float | None = None,
    steps: int = 50,
    restarts: int = 1,
    random_start: bool = False,
    loss: str = "ce",
    early_stop: bool = True,
    quantize: bool = True,
    seed: int = 0,
    progress: bool = True,
    speed: Speed | None = None,
) -> AttackResult:
    """Targeted (``target`` given) or untargeted attack on ``images`` ((C,H,W) or (N,C,H,W) in [0,1]).

    Untargeted attacks move away from ``labels`` (default: the model's clean top-1). Several targets for one
    image are one batch. ``step_size`` defaults to :func:`robustlens.optim.steps.madry_step_size`. With
    ``quantize`` every iterate is judged on its 8-bit form inside the ball (:class:`EightBit`) and that form is
    returned, so a saved PNG reloads and classifies as reported: early stop stops only on a success that
    survives rounding. ``success`` is the verdict of the model itself on the returned images.

    Example:

    ```pycon
    >>> import torch
    >>> from robustlens.models import create_model
    >>> from robustlens.recipes import attack
    >>> model = create_model("mnist_lenet5", "none", seed=0)
    >>> x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    >>> res = attack(model, x, target=3, norm="l2", eps=3.0, steps=20, seed=0)
    >>> res.adversarial.shape
    torch.Size([1, 1, 28, 28])
    >>> row = res.to_dict()["results"][0]  # per image: success, distances, top-5 before and after
    >>> row["l2"] <= 3.0 + 1e-4, isinstance(row["success"], bool)
    (True, True)

    ```
    """
    eps, step_size = _check_attack(eps=eps, step_size=step_size, steps=steps, restarts=restarts, loss=loss)
    threat = make_threat(norm, eps)
    step_size = madry_step_size(eps, steps) if step_size is None else step_size
    x = _as_batch(images).detach()
    device = x.device
    x, targets = _pair_targets(x, target, device)
    with torch.inference_mode():
        clean_logits = model(x).clone()
    if labels is None:
        labels_t = clean_logits.argmax(1)
    else:
        labels_t = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1).expand(x.shape[0]).clone()
    targeted = targets is not None
    criterion = criterion_for(targets if targets is not None else labels_t, targeted=targeted)
    res = optimize(model, x, criterion.objective(loss), threat=threat, steps=steps, rule=SteepestStep(step_size),
                   start=RandomInThreat() if random_start else AtInput(), restarts=restarts, criterion=criterion,
                   early_stop=early_stop, output=EightBit(threat) if quantize else None, seed=seed,
                   progress=progress, speed=speed, desc="attack")
    adv = res.x
    with torch.inference_mode():
        logits = model(adv).clone()
    delta = adv - x
    settings = {"targeted": targeted, "norm": threat.name, "eps": eps, "eps_255": eps * 255,
                "step_size": step_size, "steps": steps, "restarts": restarts, "random_start": random_start,
                "loss": loss, "early_stop": early_stop, "quantize": quantize, "seed": seed}
    return AttackResult(original=x, adversarial=adv, targets=targets, labels=labels_t, success=criterion.on(logits),
                        before=topk(model, clean_logits), after=topk(model, logits), linf=metrics.linf(delta),
                        l2=metrics.l2(delta), psnr=metrics.psnr(adv, x), ssim=metrics.ssim(adv, x),
                        history=res.history, steps_run=res.steps_run, example_steps=res.example_steps,
                        seconds=res.seconds, settings=settings)


def _check_attack(*, eps: float, step_size: float | None, steps: int, restarts: int, loss: str
                  ) -> tuple[float, float | None]:
    """The numbers a person gives an attack: finite, in range (UserError otherwise)."""
    positive("eps", eps, allow_zero=True)
    positive("steps", steps)
    positive("restarts", restarts)
    if step_size is not None:
        positive("step_size", step_size, allow_zero=eps == 0)
    if loss not in LOSSES:
        raise UserError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
    return finite("eps", eps), None if step_size is None else float(step_size)
