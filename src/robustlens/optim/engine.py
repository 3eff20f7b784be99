"""The one loop: optimise an input of a fixed model to minimise a per-example objective under a threat model.

Attacks, feature inversion, DeepDream and feature visualisation are all :func:`optimize` with different
objectives, constraints, starts, parameterisations and transforms.

Guarantees:
- gradients are taken w.r.t. the input only (``torch.autograd.grad``); parameters are frozen for the run and
  their ``requires_grad`` flags restored afterwards; the model's train/eval mode is left as it is;
- each example is stepped with the gradient of its own loss (the backward pass uses the *sum* over examples)
  and keeps its own best iterate: a successful iterate beats an unsuccessful one, then lower loss wins;
- with ``early_stop``, an example leaves the batch at its first successful iterate (saving its compute);
- randomness (random starts, transforms) comes from one ``torch.Generator`` seeded with ``seed``: the global
  RNG is not touched.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from robustlens.models.layers import capture
from robustlens.optim import speed
from robustlens.optim.objectives import Objective, Outputs, as_objective
from robustlens.optim.threat import ThreatModel, Unconstrained

SuccessFn = Callable[[Outputs], torch.Tensor]
Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class Parameterization(Protocol):
    """How an image is made from the optimised tensor (see :mod:`robustlens.optim.param`)."""

    def init(self, x: torch.Tensor) -> torch.Tensor: ...  # image (N,C,H,W) in [0,1] -> latent

    def image(self, latent: torch.Tensor) -> torch.Tensor: ...  # latent -> image (N,C,H,W) in [0,1]


@dataclass
class OptimizeResult:
    """``x`` best iterate per example (N,C,H,W) in [0,1]; its ``loss`` (N,) and ``success`` (N,) bool;
    ``history`` one dict per step (see :func:`optimize`); ``steps_run`` gradient steps taken by the batch over
    all restarts; ``example_steps`` gradient steps summed over examples (the compute spent: early-stopped
    examples stop counting); ``seconds`` wall time."""

    x: torch.Tensor
    loss: torch.Tensor
    success: torch.Tensor
    history: list[dict] = field(default_factory=list)
    steps_run: int = 0
    seconds: float = 0.0
    example_steps: int = 0


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


class _Adam:
    """Element-wise Adam on the optimised tensor, with rows that can be dropped (per-example state)."""

    def __init__(self, like: torch.Tensor, betas=(0.9, 0.999), eps=1e-8):
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)
        self.t = 0
        self.b1, self.b2, self.eps = betas[0], betas[1], eps

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        self.t += 1
        self.m.mul_(self.b1).add_(grad, alpha=1 - self.b1)
        self.v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        mhat = self.m / (1 - self.b1 ** self.t)
        vhat = self.v / (1 - self.b2 ** self.t)
        return mhat / (vhat.sqrt() + self.eps)

    def keep(self, rows: torch.Tensor) -> None:
        self.m, self.v = self.m[rows], self.v[rows]


def _start(start, threat: ThreatModel, x0: torch.Tensor, gen: torch.Generator, restart: int) -> torch.Tensor:
    if isinstance(start, torch.Tensor):
        if start.shape != x0.shape:
            raise ValueError(f"start has shape {tuple(start.shape)}, x0 has {tuple(x0.shape)}")
        s = start.detach().to(x0)
        return threat.project(s, x0) if restart == 0 else threat.random_start(x0, gen)
    if start == "x0":
        return x0.clone() if restart == 0 else threat.random_start(x0, gen)
    if start == "random":
        return threat.random_start(x0, gen)
    raise ValueError(f"start must be 'x0', 'random' or a tensor, got {start!r}")


# early stop: drop the stopped examples from the batch once at most this fraction of it is still running
COMPACT_BELOW = {"cpu": 1.0}  # other devices: 0.5


def optimize(
    model: nn.Module,
    x0: torch.Tensor,
    objective: Objective | str | Callable[[Outputs], torch.Tensor],
    *,
    threat: ThreatModel | None = None,
    steps: int,
    step_size: float,
    start: str | torch.Tensor = "x0",
    restarts: int = 1,
    early_stop: bool = False,
    success_fn: SuccessFn | None = None,
    seed: int = 0,
    progress: bool = True,
    history: bool = True,
    param: Parameterization | None = None,
    transforms: Transform | None = None,
    step_rule: str = "pgd",
    lr: float | None = None,
    schedule: str = "constant",
    channels_last: bool | str | None = None,
    precision: str | None = None,
    desc: str = "optimize",
) -> OptimizeResult:
    """Minimise ``objective`` (Outputs -> (N,)) over inputs near ``x0`` (N,C,H,W in [0,1]).

    - ``threat``: the allowed set around ``x0`` (default: only the box [0,1]); each step is projected onto it.
    - ``step_rule``: ``"pgd"``: x ← project(x − step_size · threat.ascent_direction(grad)) (sign for L∞,
      unit L2 for L2, ...); ``"adam"``: element-wise Adam with learning rate ``lr`` (default ``step_size``),
      then the projection. ``schedule``: ``"constant"`` or ``"cosine"`` (step size / learning rate times
      ½(1 + cos(π·t/steps)) at step t: large moves first, fine ones at the end).
    - ``start``: ``"x0"``, ``"random"`` (``threat.random_start``) or a tensor like ``x0``. Restarts after the
      first always start at a random point of the threat set; each example keeps its best over restarts.
    - ``success_fn(outputs) -> (N,) bool`` marks success; with ``early_stop`` an example stops at its first
      success (and is not rerun by later restarts).
    - ``param``: optimise a latent (FFT, decorrelated colour...) whose ``image(latent)`` is the image; the
      threat must then be unconstrained. ``transforms(image, generator)`` (jitter, scale, rotate) are applied
      to the image before the model, not to the stored iterate.
    - ``history``: one dict per evaluated iterate: ``restart``, ``step``, ``loss`` (mean over examples still
      running), ``best_loss`` (mean over all), ``success`` (fraction of all examples with a successful best),
      ``active``, and the mean of every figure the objective reports (e.g. ``target_prob``).
    - speed (:mod:`robustlens.optim.speed`): ``channels_last`` (True, False, ``"auto"``) and ``precision``
      (``"fp32"``, ``"bf16"``, ``"auto"``); None takes the settings in force (``speed.use``; defaults:
      channels-last for conv nets, bf16 autocast only where measured safe). For logits-only objectives an
      eval-mode model runs as a private copy with BatchNorm folded into the convolutions (``fold_bn``). The
      model's memory format is restored afterwards. With autocast and early stop, every autocast success
      (the final iterate's too) is confirmed in float32 before it counts, so each ``success`` is a float32
      decision (an example never confirmed keeps the autocast loss of its best iterate). With autocast and
      no early stop, the final iterate is evaluated in float32 and every best iterate only an autocast pass
      judged is re-checked in float32, so ``loss`` and ``success`` are float32 decisions.

    There are ``steps`` gradient steps per restart and ``steps + 1`` evaluated iterates (the last one is
    evaluated under ``torch.inference_mode``).
    """
    objective = as_objective(objective)
    threat = threat or Unconstrained()
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if step_rule not in ("pgd", "adam"):
        raise ValueError(f"step_rule must be 'pgd' or 'adam', got {step_rule!r}")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    if early_stop and success_fn is None:
        raise ValueError("early_stop needs a success_fn")
    if param is not None and not isinstance(threat, Unconstrained):
        raise ValueError("a parameterisation needs an unconstrained threat model (the latent cannot be projected)")
    if x0.dim() < 2:
        raise ValueError(f"x0 must be a batch (N, ...), got shape {tuple(x0.shape)}")

    t_start = time.perf_counter()
    x0 = x0.detach()
    n, device = x0.shape[0], x0.device
    gen = torch.Generator(device=device).manual_seed(int(seed))
    lr = step_size if lr is None else lr
    settings = speed.resolve(channels_last=channels_last, precision=precision)
    cl = speed.use_channels_last(model, x0, settings.channels_last)
    fmt = torch.channels_last if cl else torch.contiguous_format
    amp = speed.autocast_dtype(model, settings.precision, device)
    # with early stop every autocast success is confirmed in float32 as it happens (the last iterate's too),
    # which makes a float32 pass over the final iterate and a float32 re-check of best iterates unnecessary
    confirm_each = amp is not None and early_stop
    # early stop drops stopped examples from the batch at once on CPU; on a GPU only once the batch has
    # halved (they are carried, frozen, until then): each new batch size costs cuDNN new execution plans
    compact_below = COMPACT_BELOW.get(device.type, 0.5)

    best_x = x0.clone()
    best_loss = torch.full((n,), float("inf"), device=device)
    best_succ = torch.zeros(n, dtype=torch.bool, device=device)
    best_fp32 = torch.ones(n, dtype=torch.bool, device=device)  # the best iterate was judged in float32
    hist: list[dict] = []
    steps_run = example_steps = 0

    def forward(z: torch.Tensor, index: torch.Tensor, dtype: torch.dtype | None
                ) -> tuple[Outputs, torch.Tensor, torch.Tensor]:
        img = param.image(z) if param is not None else z
        xin = transforms(img, gen) if transforms is not None else img
        with capture(model, objective.layers) as acts, speed.autocast(device, dtype):
            logits = net(xin.contiguous(memory_format=fmt))
        out = Outputs(x=img, logits=logits.float(), activations=acts, index=index)
        return out, objective(out).float(), xin

    def confirm(out: Outputs, xin: torch.Tensor, succ: torch.Tensor, loss: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float32 verdict on the rows an autocast pass marked successful: (success, loss with those rows
        recomputed in float32, mask of the rows judged in float32)."""
        rows = succ.nonzero().squeeze(1)
        with torch.inference_mode(), capture(model, objective.layers) as acts:
            logits = net(xin.detach()[rows].contiguous(memory_format=fmt)).float()
            sub = Outputs(x=out.x.detach()[rows], logits=logits, activations=acts, index=out.index[rows])
            ok, sub_loss = _success(success_fn, sub, logits[:, 0]), objective(sub).float()
        judged = torch.zeros_like(succ)
        judged[rows] = True
        confirmed, loss = torch.zeros_like(succ), loss.clone()
        confirmed[rows], loss[rows] = ok, sub_loss
        return confirmed, loss, judged

    bar = _progress(restarts * steps, desc, progress)
    with contextlib.ExitStack() as stack:
        stack.enter_context(frozen(model))
        net = model
        if settings.fold_bn and not objective.layers:  # hooks do not run in the folded copy
            net = speed.prepared(model, x0, channels_last=cl)
        if net is model:
            stack.enter_context(speed.channels_last_model(model, enabled=cl))
        if settings.compile:
            net = speed.compiled(net)
        for r in range(restarts):
            active = (~best_succ).nonzero().squeeze(1) if early_stop else torch.arange(n, device=device)
            if len(active) == 0:
                break
            x0a = x0[active]
            x = _start(start, threat, x0, gen, r)[active]
            z = param.init(x).detach() if param is not None else x
            adam = _Adam(z) if step_rule == "adam" else None
            done = torch.zeros(len(active), dtype=torch.bool, device=device)  # stopped, still in the batch
            for t in range(steps + 1):
                last = t == steps
                judged = None  # rows judged in float32 (None: all of them when amp is None or last)
                if last:
                    with torch.inference_mode():
                        out, loss, xin = forward(z, active, amp if confirm_each else None)
                        loss = loss.detach().clone()
                        img = out.x.clone()
                        succ = _success(success_fn, out, loss)
                        report = _reports(objective, out) if history else {}
                    if confirm_each and bool((succ & ~done).any()):
                        succ, loss, judged = confirm(out, xin, succ & ~done, loss)
                    grad = None
                else:
                    z.requires_grad_(True)
                    out, loss, xin = forward(z, active, amp)
                    grad, = torch.autograd.grad(loss.sum(), z)
                    z = z.detach()
                    loss = loss.detach()
                    with torch.no_grad():
                        img = out.x.detach()
                        succ = _success(success_fn, out, loss)
                        report = _reports(objective, out) if history else {}
                    if confirm_each and bool((succ & ~done).any()):  # only float32 stops an example
                        succ, loss, judged = confirm(out, xin, succ & ~done, loss)
                with torch.no_grad():
                    b_loss, b_succ = best_loss[active], best_succ[active]
                    better = ((succ & ~b_succ) | ((succ == b_succ) & (loss < b_loss))) & ~done
                    # masked writes by index: no host sync (cheap next to a forward/backward pass)
                    best_x[active] = torch.where(better.view(-1, *[1] * (img.dim() - 1)), img.to(best_x.dtype),
                                                 best_x[active])
                    best_loss[active] = torch.where(better, loss.float(), b_loss)
                    best_succ[active] = (succ & ~done) | b_succ
                    in_fp32 = judged if judged is not None else torch.full_like(
                        better, amp is None or (last and not confirm_each))
                    best_fp32[active] = torch.where(better, in_fp32, best_fp32[active])
                    if history:
                        hist.append({"restart": r, "step": t, "loss": float(loss.float().mean()),
                                     "best_loss": float(best_loss.mean()), "success": float(best_succ.float().mean()),
                                     "active": int(len(active)) - int(done.sum()),
                                     **{k: float(v.float().mean()) for k, v in report.items()}})
                    if last:
                        break
                    if early_stop and bool((succ & ~done).any()):
                        done = done | succ
                        running = int((~done).sum())
                        if running == 0:
                            bar.update(steps - t)
                            break
                        if running <= compact_below * len(active):  # drop the stopped rows from the batch
                            keep = ~done
                            active, z, grad, x0a, done = active[keep], z[keep], grad[keep], x0a[keep], done[keep]
                            if adam is not None:
                                adam.keep(keep)
                    d = adam.direction(grad) if adam is not None else threat.ascent_direction(grad, z)
                    size = lr if adam is not None else step_size
                    if schedule == "cosine":
                        size *= 0.5 * (1 + math.cos(math.pi * t / steps))
                    z_next = z - size * d
                    if param is None:
                        z_next = threat.project(z_next, x0a)
                    z = torch.where(done.view(-1, *[1] * (z.dim() - 1)), z, z_next) if bool(done.any()) else z_next
                    steps_run += 1
                    example_steps += len(active) - int(done.sum())
                    bar.update(1)
                    if progress:
                        bar.set_postfix(loss=f"{float(best_loss.mean()):.4g}",
                                        success=f"{float(best_succ.float().mean()):.2f}")
        if amp is not None and not confirm_each and transforms is None and not bool(best_fp32.all()):
            _recheck_float32(forward, best_x, best_loss, best_succ, success_fn, param, ~best_fp32)
    bar.close()
    return OptimizeResult(x=best_x, loss=best_loss, success=best_succ, history=hist, steps_run=steps_run,
                          seconds=time.perf_counter() - t_start, example_steps=example_steps)


def _recheck_float32(forward, best_x, best_loss, best_succ, success_fn, param, rows: torch.Tensor) -> None:
    """Re-evaluate in float32, in place, the best iterates of ``rows`` (a bool mask): those only an autocast
    pass judged (it may misjudge a near-tie)."""
    idx = rows.nonzero().squeeze(1)
    with torch.inference_mode():
        z = param.init(best_x[idx]) if param is not None else best_x[idx]
        out, loss, _ = forward(z, idx, None)
        succ = _success(success_fn, out, loss)
    best_loss[idx] = loss
    if success_fn is not None:
        best_succ[idx] = succ


def _success(success_fn: SuccessFn | None, out: Outputs, loss: torch.Tensor) -> torch.Tensor:
    if success_fn is None:
        return torch.zeros_like(loss, dtype=torch.bool)
    return success_fn(out).to(torch.bool).reshape(-1)


def _reports(objective: Objective, out: Outputs) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in objective.report(out).items()}


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)
