"""The one loop: optimise an input of a fixed model to minimise a per-example objective under a threat model.

Attacks, feature inversion, DeepDream, feature visualisation and image synthesis are all :func:`optimize`
with different objectives, threat models, step rules, starts, parameterisations and transforms. The loop only
wires named pieces together:

- model preparation (:func:`robustlens.optim.prepare.prepare`: frozen parameters, speed settings);
- a step rule (:mod:`robustlens.optim.steps`) and a start (:mod:`robustlens.optim.starts`);
- a success criterion (:mod:`robustlens.optim.criteria`);
- best iterates and the active set (:mod:`robustlens.optim.tracker`).

Guarantees:
- gradients are taken w.r.t. the input only; parameters are frozen for the run and their ``requires_grad``
  flags restored afterwards; the model's train/eval mode and memory format are left as they were;
- each example is stepped with the gradient of its own loss (the backward pass uses the *sum* over examples)
  and keeps its own best iterate: a successful iterate beats an unsuccessful one, then lower loss wins;
- every success that counts is an *exact* verdict: when the fast pass is not exact (bf16 autocast) or the
  returned image differs from the iterate (``output``, e.g. 8-bit rounding inside the ball), each iterate the
  fast pass calls successful is judged again on its returned form, in float32 without autocast — early
  stop and the choice of the best iterate use that verdict only;
- with ``early_stop``, an example leaves the batch at its first (exact) success;
- randomness (random starts, transforms) comes from one ``torch.Generator`` seeded with ``seed``: the global
  RNG is not touched.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

import robustlens.optim.speed as speed_settings
from robustlens.models.layers import capture
from robustlens.optim._tensor import per_example
from robustlens.optim.criteria import Criterion
from robustlens.optim.objectives import Objective, Outputs, as_objective
from robustlens.optim.prepare import PreparedModel, prepare
from robustlens.optim.starts import Start, as_start
from robustlens.optim.steps import SteepestStep, StepRule
from robustlens.optim.threat import ThreatModel, Unconstrained
from robustlens.optim.tracker import ActiveSet, BestIterates

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
OutputMap = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (iterate, x0) -> the image returned


class Parameterization(Protocol):
    """How an image is made from the optimised tensor (see :mod:`robustlens.optim.param`)."""

    def init(self, x: torch.Tensor) -> torch.Tensor: ...  # image (N,C,H,W) in [0,1] -> latent

    def image(self, latent: torch.Tensor) -> torch.Tensor: ...  # latent -> image (N,C,H,W) in [0,1]


@dataclass
class OptimizeResult:
    """``x`` best iterate per example (N,C,H,W) in [0,1] (in its returned form); its ``loss`` (N,) and
    ``success`` (N,) bool; ``history`` one dict per step (see :func:`optimize`); ``steps_run`` gradient steps
    taken by the batch over all restarts; ``example_steps`` gradient steps summed over examples (the compute
    spent: early-stopped examples stop counting); ``seconds`` wall time."""

    x: torch.Tensor
    loss: torch.Tensor
    success: torch.Tensor
    history: list[dict] = field(default_factory=list)
    steps_run: int = 0
    seconds: float = 0.0
    example_steps: int = 0


@dataclass
class _Evaluated:
    """One evaluated iterate of the rows in the batch: the image (its returned form where exactly judged),
    loss (M,), success (M,), exact (M,) — judged by the exact pass — and the objective's report."""

    img: torch.Tensor
    loss: torch.Tensor
    success: torch.Tensor
    exact: torch.Tensor
    report: dict[str, torch.Tensor]


def optimize(
    model: nn.Module,
    x0: torch.Tensor,
    objective: Objective | str | Callable[[Outputs], torch.Tensor],
    *,
    steps: int,
    threat: ThreatModel | None = None,
    rule: StepRule | None = None,
    step_size: float | None = None,
    start: Start | torch.Tensor | None = None,
    restarts: int = 1,
    criterion: Criterion | None = None,
    early_stop: bool = False,
    output: OutputMap | None = None,
    param: Parameterization | None = None,
    transforms: Transform | None = None,
    speed: speed_settings.Speed | None = None,
    seed: int = 0,
    progress: bool = True,
    history: bool = True,
    desc: str = "optimize",
) -> OptimizeResult:
    """Minimise ``objective`` (Outputs -> (N,)) over inputs near ``x0`` (N,C,H,W in [0,1]).

    - ``threat``: the allowed set around ``x0`` (default: only the box [0,1]); each step is projected onto it.
    - ``rule``: a step rule (:class:`~robustlens.optim.steps.SteepestStep` — PGD — by default, with
      ``step_size``; :class:`~robustlens.optim.steps.Adam`; or your own).
    - ``start``: a :mod:`~robustlens.optim.starts` object or a tensor like ``x0`` (default: x0). Restarts after
      the first start at a random point of the threat set; each example keeps its best over restarts.
    - ``criterion``: marks success (:class:`~robustlens.optim.criteria.Targeted`, ``Untargeted``); with
      ``early_stop`` an example stops at its first success (and is not rerun by later restarts).
    - ``output(iterate, x0)``: the image that is returned for an iterate (e.g. 8-bit rounding inside the
      ball); every success is judged on it.
    - ``param``: optimise a latent (FFT, decorrelated colour...) whose ``image(latent)`` is the image; the
      threat must then be unconstrained. ``transforms(image, generator)`` (jitter, scale, rotate) are applied
      to the image before the model, not to the stored iterate.
    - ``speed``: a :class:`~robustlens.optim.speed.Speed` (None: the settings in force, ``speed.use``).
    - ``history``: one dict per evaluated iterate: ``restart``, ``step``, ``loss`` (mean over the batch),
      ``best_loss`` (mean over all), ``success`` (fraction of all examples with a successful best),
      ``active`` (examples still running), and the mean of every figure the objective reports.

    There are ``steps`` gradient steps per restart and ``steps + 1`` evaluated iterates (the last one under
    ``torch.inference_mode``).

    Example:

    ```pycon
    >>> import torch
    >>> from robustlens.models import create_model
    >>> from robustlens.optim import SteepestStep, Targeted, make_threat, optimize
    >>> model = create_model("mnist_lenet5", "none", seed=0)  # random weights: fast, offline
    >>> x0 = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    >>> target = Targeted([3, 7])
    >>> res = optimize(model, x0, target.objective(), threat=make_threat("l2", 2.0), steps=10,
    ...                rule=SteepestStep(0.5), criterion=target, progress=False)
    >>> res.x.shape
    torch.Size([2, 1, 28, 28])
    >>> bool(((res.x - x0).flatten(1).norm(dim=1) <= 2.0 + 1e-5).all())
    True

    ```
    """
    objective = as_objective(objective)
    threat = threat or Unconstrained()
    rule = _check(x0, steps=steps, restarts=restarts, rule=rule, step_size=step_size, criterion=criterion,
                  early_stop=early_stop, param=param, threat=threat)
    settings = speed or speed_settings.current()
    run = _Run(x0.detach(), objective, threat=threat, rule=rule, start=as_start(start), criterion=criterion,
               early_stop=early_stop, output=output, param=param, transforms=transforms, seed=seed, steps=steps,
               history=history)
    t0 = time.perf_counter()
    with prepare(model, run.x0, settings, hooks=bool(objective.layers)) as net, _progress(
            restarts * steps, desc, progress) as bar:
        run.net, run.bar = net, bar
        for r in range(restarts):
            if not run.restart(r):
                break
        run.finish()
    best = run.best
    return OptimizeResult(x=best.x, loss=best.loss, success=best.success, history=run.hist,
                          steps_run=run.steps_run, seconds=time.perf_counter() - t0, example_steps=run.example_steps)


def _check(x0: torch.Tensor, *, steps: int, restarts: int, rule: StepRule | None, step_size: float | None,
           criterion: Criterion | None, early_stop: bool, param: Parameterization | None,
           threat: ThreatModel) -> StepRule:
    """Validate the arguments of :func:`optimize`; returns the step rule."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if early_stop and criterion is None:
        raise ValueError("early_stop needs a criterion")
    if param is not None and not isinstance(threat, Unconstrained):
        raise ValueError("a parameterisation needs an unconstrained threat model (the latent cannot be projected)")
    if x0.dim() < 2:
        raise ValueError(f"x0 must be a batch (N, ...), got shape {tuple(x0.shape)}")
    if rule is None:
        if step_size is None:
            raise ValueError("give a step rule or a step_size")
        return SteepestStep(step_size)
    if step_size is not None:
        raise ValueError("give either a step rule or a step_size, not both")
    return rule


class _Run:
    """The state of one :func:`optimize` call; :meth:`restart` runs one restart, :meth:`finish` settles the
    best iterates that no exact pass judged."""

    net: PreparedModel
    bar: Any

    def __init__(self, x0: torch.Tensor, objective: Objective, *, threat: ThreatModel, rule: StepRule, start: Start,
                 criterion: Criterion | None, early_stop: bool, output: OutputMap | None,
                 param: Parameterization | None, transforms: Transform | None, seed: int, steps: int, history: bool):
        self.x0, self.objective, self.threat, self.rule, self.start = x0, objective, threat, rule, start
        self.criterion, self.early_stop, self.output = criterion, early_stop, output
        self.param, self.transforms, self.steps, self.history = param, transforms, steps, history
        self.gen = torch.Generator(device=x0.device).manual_seed(int(seed))
        self.best = BestIterates(x0)
        self.hist: list[dict] = []
        self.steps_run = self.example_steps = 0

    @property
    def judged_again(self) -> bool:
        """Whether a fast-pass success must be confirmed by the exact pass."""
        return self.criterion is not None and (not self.net.fast_is_exact or self.output is not None)

    def restart(self, r: int) -> bool:
        """Run restart ``r``; False when no example is left to optimise."""
        n = self.x0.shape[0]
        index = (~self.best.success).nonzero().squeeze(1) if self.early_stop else torch.arange(n, device=self.x0.device)
        if len(index) == 0:
            return False
        active = ActiveSet(index)
        z = self.start(self.x0, self.threat, self.gen, r)[index]
        z = self.param.init(z).detach() if self.param is not None else z
        x0a = self.x0[index]
        self.rule.start(z, self.steps)
        for t in range(self.steps + 1):
            ev, grad = self._evaluate(z, active, x0a, with_grad=t < self.steps)
            self.best.update(active.index, ev.img, ev.loss, ev.success, ev.exact, active.frozen)
            self._record(r, t, ev, active)
            if grad is None:
                break
            loss = ev.loss
            if self.early_stop and bool((ev.success & ~active.frozen).any()):
                keep = active.stop(ev.success & ~active.frozen)
                if active.running() == 0:
                    self.bar.update(self.steps - t)
                    break
                if keep is not None:
                    z, grad, x0a, loss = z[keep], grad[keep], x0a[keep], loss[keep]
                    self.rule.keep(keep)
            z = self._step(z, grad, loss, t, x0a, active)
        return True

    def _evaluate(self, z: torch.Tensor, active: ActiveSet, x0a: torch.Tensor, *, with_grad: bool
                  ) -> tuple[_Evaluated, torch.Tensor | None]:
        """The fast pass over the batch (with the input gradient unless it is the last iterate), then the exact
        pass over the rows it calls successful."""
        grad = None
        with contextlib.nullcontext() if with_grad else torch.inference_mode():
            if with_grad:
                z.requires_grad_(True)
            img = self.param.image(z) if self.param is not None else z
            xin = self.transforms(img, self.gen) if self.transforms is not None else img
            with capture(self.net.model, self.objective.layers) as acts:
                logits = self.net.forward(xin)
            out = Outputs(x=img, logits=logits, activations=acts, index=active.index)
            loss = self.objective(out).float()
            if with_grad:
                grad, = torch.autograd.grad(loss.sum(), z)
            with torch.no_grad():
                success = self._success(out)
                report = {k: v.detach() for k, v in self.objective.report(out).items()} if self.history else {}
        exact = torch.full_like(success, self.net.fast_is_exact and self.output is None)
        ev = _Evaluated(img=img.detach(), loss=loss.detach(), success=success, exact=exact, report=report)
        if self.judged_again:
            self._judge(ev, active, x0a)
        return ev, grad

    def _success(self, out: Outputs) -> torch.Tensor:
        if self.criterion is None:
            return torch.zeros(out.logits.shape[0], dtype=torch.bool, device=out.logits.device)
        return self.criterion(out).to(torch.bool).reshape(-1)

    def _exact(self, img: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, success) of images (M, ...) of the examples ``index`` by the exact pass."""
        with torch.inference_mode(), capture(self.net.model, self.objective.layers) as acts:
            out = Outputs(x=img, logits=self.net.exact(img), activations=acts, index=index)
            return self.objective(out).float().clone(), self._success(out).clone()

    def _judge(self, ev: _Evaluated, active: ActiveSet, x0a: torch.Tensor) -> None:
        """Replace, in ``ev``, the fast verdict of every row that would become its example's *first* successful
        best by the exact verdict on its returned form. A row that already has an exact success and improves on
        it is provisional: its exact success is kept as the fallback, and :meth:`finish` judges it once."""
        cand = self.best.candidates(active.index, ev.loss, ev.success, active.frozen)
        had = self.best.success[active.index]
        if bool((cand & had).any()):
            self.best.keep_fallback(active.index[cand & had])
        rows = (cand & ~had).nonzero().squeeze(1)
        if len(rows) == 0:
            return
        img = ev.img[rows] if self.output is None else self.output(ev.img[rows], x0a[rows])
        loss, success = self._exact(img, active.index[rows])
        ev.img, ev.loss, ev.success = ev.img.clone(), ev.loss.clone(), ev.success.clone()  # never write into z
        ev.img[rows], ev.loss[rows], ev.success[rows], ev.exact[rows] = img, loss, success, True

    def _step(self, z: torch.Tensor, grad: torch.Tensor, loss: torch.Tensor, t: int, x0a: torch.Tensor,
              active: ActiveSet) -> torch.Tensor:
        with torch.no_grad():
            z_next = self.rule.step(z.detach(), grad, loss=loss, t=t, threat=self.threat, x0=x0a)
            if self.param is None:
                z_next = self.threat.project(z_next, x0a)
            if bool(active.frozen.any()):
                z_next = torch.where(per_example(active.frozen, z_next), z.detach(), z_next)
        self.steps_run += 1
        self.example_steps += active.running()
        self.bar.update(1)
        return z_next

    def _record(self, r: int, t: int, ev: _Evaluated, active: ActiveSet) -> None:
        best = self.best
        if self.history:
            self.hist.append({"restart": r, "step": t, "loss": float(ev.loss.mean()),
                              "best_loss": float(best.loss.mean()), "success": float(best.success.float().mean()),
                              "active": active.running(),
                              **{k: float(v.float().mean()) for k, v in ev.report.items()}})
        if not self.bar.disable:
            self.bar.set_postfix(loss=f"{float(best.loss.mean()):.4g}",
                                 success=f"{float(best.success.float().mean()):.2f}", refresh=False)

    def finish(self) -> None:
        """Give every best iterate its returned form, and (without early stop, where it costs one pass) its
        exact verdict; a provisional best that fails it gives way to its example's earlier exact success. With
        early stop an example that never reached an exact success keeps its fast-pass loss and is not
        successful."""
        rows = (~self.best.exact).nonzero().squeeze(1)
        if len(rows) == 0:
            return
        x = self.best.x[rows]
        if self.output is not None:
            x = self.output(x, self.x0[rows])
        if self.early_stop or self.transforms is not None:
            self.best.x[rows] = x
            return
        loss, success = self._exact(x, rows)
        self.best.replace(rows, x, loss, success if self.criterion is not None else None)
        self.best.restore_fallback(rows[~self.best.success[rows]])


@contextlib.contextmanager
def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
