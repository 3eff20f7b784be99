"""Robustness evaluation: clean accuracy and robust accuracy under untargeted PGD, for several ε at once.

An example is *robust at ε* when the model classifies it correctly and PGD (``steps`` steps, ``restarts``
restarts, ε-ball in pixel units) finds no misclassified point within ε. ``start="random"`` begins every restart
at a random point of the ball (Madry et al.); ``start="input"`` begins the first at the clean image and later
ones at random points, so ``start="input", restarts=2`` tries both textbook starts and keeps, per example, a
success of either. The ε are attacked in increasing order, and only examples still robust at the previous ε are
attacked again: an adversarial example within a smaller ball is also within every larger ball, so robust accuracy
cannot grow with ε.

Determinism: the dataset is cut into fixed batches of ``batch_size`` in dataset order; batch ``b`` is
attacked with seed ``seed + b * 1009 + i`` (i = the index of ε), so each example's random start depends on its
batch, not on which process handles it. Under ``torchrun`` batch ``b`` goes to rank ``b mod K`` and the counts
are summed over ranks: the same numbers as one process with the same ``batch_size``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from robustlens.checks import count, positive
from robustlens.errors import UserError
from robustlens.optim.steps import madry_step_size
from robustlens.robust.distributed import Context, all_reduce_sum

SEED_STRIDE = 1009


@dataclass
class RobustnessResult:
    """Counts and accuracies. ``robust_correct[i]`` is the count at ``eps[i]``; accuracies are fractions."""

    n: int
    clean_correct: int
    eps: list[float]
    robust_correct: list[int]
    norm: str
    steps: int
    step_sizes: list[float]
    restarts: int
    seed: int
    batch_size: int
    world_size: int = 1
    start: str = "random"
    seconds: float = 0.0
    skipped: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct / self.n if self.n else math.nan

    @property
    def robust_accuracy(self) -> dict[float, float]:
        return {e: (c / self.n if self.n else math.nan) for e, c in zip(self.eps, self.robust_correct)}

    def to_dict(self) -> dict:
        """JSON-ready; ``robust_accuracy`` is a number when there is one ε, else a map ``"ε" -> accuracy``."""
        robust = self.robust_accuracy
        one = len(self.eps) == 1
        return {
            "n": self.n,
            "clean_correct": self.clean_correct,
            "clean_accuracy": self.clean_accuracy,
            "robust_correct": self.robust_correct[0] if one else {f"{e:g}": c for e, c in zip(self.eps, self.robust_correct)},
            "robust_accuracy": robust[self.eps[0]] if one else {f"{e:g}": a for e, a in robust.items()},
            "attack": {"name": "pgd", "norm": self.norm, "eps": self.eps, "steps": self.steps,
                       "step_size": self.step_sizes, "restarts": self.restarts, "start": self.start,
                       "random_start": self.start == "random",
                       "seed": self.seed},
            "batch_size": self.batch_size,
            "processes": self.world_size,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            **self.extra,
        }


PGD_STARTS = ("random", "input")


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def _restore(model: nn.Module, modes: list[bool]) -> None:
    """Put every sub-module back in its own train/eval mode (a wrapper's flag may differ from its network's)."""
    for m, training in zip(model.modules(), modes):
        m.training = training


def batches_of(n: int, batch_size: int) -> list[list[int]]:
    """Consecutive index batches covering range(n)."""
    return [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]


def evaluate_robustness(
    model: nn.Module,
    dataset,
    *,
    norm: str = "linf",
    eps: Sequence[float] = (8 / 255,),
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    start: str = "random",
    batch_size: int = 100,
    seed: int = 0,
    workers: int = 0,
    ctx: Context = Context(),
    progress: bool = False,
) -> RobustnessResult:
    """Clean and PGD robust accuracy of ``model`` (eval mode) on ``dataset`` (items ``(image, label)``), for each
    ``eps`` (sorted ascending; 0 means clean); ``start``: ``"random"`` or ``"input"`` (see the module doc).
    ``step_size`` defaults to :func:`robustlens.optim.steps.madry_step_size` per ε.
    Under ``ctx`` with K processes each takes every K-th batch and the counts are summed (see module doc)."""
    from tqdm.auto import tqdm

    from robustlens.recipes.attacks import pgd

    eps = sorted(float(e) for e in eps)
    if not eps:
        raise UserError("give at least one eps")
    for e in eps:
        positive("eps", e, allow_zero=True)
    positive("step_size", step_size)
    if start not in PGD_STARTS:
        raise UserError(f"start must be one of {', '.join(PGD_STARTS)}, got {start!r}")
    for name, value in (("steps", steps), ("restarts", restarts), ("batch_size", batch_size)):
        count(name, value)
    sizes = [step_size if step_size is not None else madry_step_size(e, steps) for e in eps]
    t0 = time.perf_counter()
    modes = _modes(model)
    model.eval()
    device = next(model.parameters()).device
    all_batches = batches_of(len(dataset), batch_size)
    mine = list(range(ctx.rank, len(all_batches), ctx.world_size))
    loader = DataLoader(dataset, batch_sampler=[all_batches[b] for b in mine], num_workers=workers)
    counts = torch.zeros(2 + len(eps), dtype=torch.float64)  # n, clean, robust per eps
    bar = tqdm(total=len(mine), desc="evaluate", disable=not (progress and ctx.is_main), dynamic_ncols=True)
    try:
        for b, (x, y) in zip(mine, loader):
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                alive = model(x).argmax(1) == y
            counts[0] += len(y)
            counts[1] += int(alive.sum())
            for i, (e, s) in enumerate(zip(eps, sizes)):
                if e > 0 and bool(alive.any()):
                    idx = alive.nonzero().squeeze(1)
                    adv = pgd(model, x[idx], y[idx], norm=norm, eps=e, step_size=s, steps=steps,
                              random_start=start == "random", restarts=restarts, early_stop=True,
                              seed=seed + b * SEED_STRIDE + i)
                    with torch.no_grad():
                        alive[idx] = model(adv).argmax(1) == y[idx]
                counts[2 + i] += int(alive.sum())
            bar.update(1)
            n = max(float(counts[0]), 1.0)
            bar.set_postfix(clean=f"{float(counts[1]) / n:.3f}", robust=f"{float(counts[-1]) / n:.3f}")
    finally:
        bar.close()
        _restore(model, modes)
    total = all_reduce_sum(counts, ctx)
    return RobustnessResult(n=int(total[0]), clean_correct=int(total[1]), eps=eps,
                            robust_correct=[int(c) for c in total[2:]], norm=norm, steps=steps, step_sizes=sizes,
                            restarts=restarts, seed=seed, batch_size=batch_size, world_size=ctx.world_size, start=start,
                            seconds=time.perf_counter() - t0, skipped=int(getattr(dataset, "skipped", 0)))


@torch.no_grad()
def clean_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on float images (N,C,H,W) in [0,1] or uint8 images."""
    modes = _modes(model)
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for s in range(0, len(labels), batch_size):
        x = images[s:s + batch_size].to(device)
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x
        correct += int((model(x).argmax(1).cpu() == labels[s:s + batch_size]).sum())
    _restore(model, modes)
    return correct / max(len(labels), 1)


def plot_accuracy_vs_eps(results: dict[str, RobustnessResult], path: str | Path, *, title: str = "") -> Path:
    """One line per named result: accuracy (clean at ε=0, then robust) against ε."""
    from robustlens.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, r in results.items():
        xs = [0.0] + [e for e in r.eps if e > 0]
        ys = [r.clean_accuracy] + [r.robust_accuracy[e] for e in r.eps if e > 0]
        ax.plot(xs, ys, marker="o", label=name)
    first = next(iter(results.values()))
    ax.set_xlabel(f"ε ({first.norm}, pixel units in [0,1])")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"PGD-{first.steps} robust accuracy (n={first.n})")
    if len(results) > 1:
        ax.legend(fontsize=8)
    return save_figure(fig, path)
