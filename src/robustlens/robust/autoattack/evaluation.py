"""AutoAttack over a dataset at several ε: counts, the per-example breakdown, flags and the manifest.

Each ε is attacked on its own, on every correctly classified example (so robust accuracy against ε is a real
check of the attack: it must not grow with ε, else ``not_monotone_in_eps`` fires). The accuracy reported at
ε_i is the worst case over ε_j ≤ ε_i (an adversarial example within a smaller ball is within every larger
one). Batches, seeds and ranks as in :func:`robustlens.robust.evaluate.evaluate_robustness`: batch ``b`` goes
to rank ``b mod K``, the i-th ε of batch ``b`` uses seed ``seed + b·1009 + i``, and the per-example codes are
summed over ranks (each example is handled by exactly one), so K processes give the numbers of one.
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

from robustlens.robust.autoattack import flags as checks
from robustlens.robust.autoattack.runner import SEED_STRIDE, autoattack, manifest_settings, model_counts, plan
from robustlens.robust.distributed import Context, all_reduce_sum
from robustlens.robust.evaluate import _modes, _restore, batches_of

COUNT_KEYS = ("correct", "zero_grad", "probabilities", "nondeterministic", "large_tried", "large_robust")


@dataclass
class AutoAttackEvaluation:
    """``eps`` ascending; ``attacks`` in order; ``robust_after[i][a]`` robust count at ``eps[i]`` after attack
    ``a`` (worst case over smaller ε included); ``broken_by[i][k]`` for example ``k``: ``"clean"``, the attack
    that broke it (at this ε or a smaller one: ``"<attack>@<ε>"``), or None (robust)."""

    n: int
    clean_correct: int
    eps: list[float]
    attacks: list[str]
    robust_after: list[dict[str, int]]
    raw_robust: list[int]
    broken_by: list[list[str | None]]
    flags: list[checks.Flag]
    manifest: dict
    seconds: float = 0.0
    skipped: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def robust_correct(self) -> list[int]:
        return [r[self.attacks[-1]] for r in self.robust_after]

    def to_dict(self) -> dict:
        n = max(self.n, 1)
        one = len(self.eps) == 1
        per_eps = [{"eps": e, "robust_correct": rc, "robust_accuracy": rc / n,
                    "robust_accuracy_after": {a: c / n for a, c in ra.items()},
                    "broken_by": _tally(bb), "robust_correct_this_eps_alone": raw}
                   for e, rc, ra, bb, raw in zip(self.eps, self.robust_correct, self.robust_after, self.broken_by,
                                                 self.raw_robust)]
        acc = [p["robust_accuracy"] for p in per_eps]
        return {"n": self.n, "clean_correct": self.clean_correct, "clean_accuracy": self.clean_correct / n if self.n
                else None,
                "robust_correct": self.robust_correct[0] if one else {f"{e:g}": c for e, c in
                                                                       zip(self.eps, self.robust_correct)},
                "robust_accuracy": acc[0] if one else {f"{e:g}": a for e, a in zip(self.eps, acc)},
                "breakdown": per_eps, "flags": [f.to_dict() for f in self.flags], "manifest": self.manifest,
                "per_example": {f"{e:g}": bb for e, bb in zip(self.eps, self.broken_by)},
                "processes": self.manifest.get("processes", 1), "skipped": self.skipped,
                "seconds": round(self.seconds, 3), **self.extra}


def _tally(codes: list[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in codes:
        key = "robust" if c is None else c.split("@")[0]
        out[key] = out.get(key, 0) + 1
    return out


def evaluate_autoattack(model: nn.Module, dataset, *, norm: str = "linf", eps: Sequence[float] = (8 / 255,),
                        attack: str = "autoattack", version: str = "standard", overrides: dict | None = None,
                        batch_size: int = 100, seed: int = 0, workers: int = 0, ctx: Context = Context(),
                        progress: bool = False) -> AutoAttackEvaluation:
    """AutoAttack (or one of its attacks) on ``dataset`` (items ``(image, label)``) at each ``eps``.
    ``overrides`` changes settings of every attack that has them (e.g. ``{"steps": 20, "queries": 500}``)."""
    from tqdm.auto import tqdm

    eps = sorted(float(e) for e in eps)
    steps = _with_overrides(plan(attack, version), overrides or {})
    names = [a for a, _ in steps]
    t0 = time.perf_counter()
    training = checks.in_training_mode(model)
    modes = _modes(model)
    device = next(model.parameters()).device
    all_batches = batches_of(len(dataset), batch_size)
    mine = list(range(ctx.rank, len(all_batches), ctx.world_size))
    loader = DataLoader(dataset, batch_sampler=[all_batches[b] for b in mine], num_workers=workers)
    codes = torch.zeros(len(eps), len(dataset), dtype=torch.float64)  # 0: not mine, 1: robust, 2: clean, 3+j
    counts = torch.zeros(len(COUNT_KEYS), dtype=torch.float64)
    bar = tqdm(total=len(mine) * len(eps) * len(steps), desc=attack, unit="attack",
               disable=not (progress and ctx.is_main), dynamic_ncols=True)

    def tick(name: str, robust: float) -> None:   # one step per attack: a batch of AutoAttack takes minutes
        bar.set_postfix_str(f"{name}: {robust:.0%} of the batch robust", refresh=False)
        bar.update(1)

    try:
        for b, (x, y) in zip(mine, loader):
            x, y = x.to(device), y.to(device)
            ids = torch.as_tensor(all_batches[b])
            for i, e in enumerate(eps):
                res = autoattack(model, x, y, norm=norm, eps=e, attack=attack, version=version,
                                 seed=seed + b * SEED_STRIDE + i, batch_size=batch_size, checks_on=False,
                                 attacks_plan=steps, on_attack=tick)
                codes[i, ids] = torch.tensor([1.0 if c is None else 2.0 if c == "clean" else 3.0 + names.index(c)
                                              for c in res.broken_by], dtype=torch.float64)
            model.eval()
            c = model_counts(model, x, y, res.clean, norm=norm, large_eps=(b == 0), seed=seed)
            counts += torch.tensor([float(c[k]) for k in COUNT_KEYS], dtype=torch.float64)
    finally:
        bar.close()
        _restore(model, modes)
    codes = all_reduce_sum(codes, ctx)
    counts = all_reduce_sum(counts, ctx)
    return _summarise(codes, dict(zip(COUNT_KEYS, (int(v) for v in counts))), eps=eps, names=names, norm=norm,
                      training=training, seconds=time.perf_counter() - t0, ctx=ctx, dataset=dataset,
                      manifest=manifest_settings(steps, attack=attack, version=version, norm=norm, seed=seed)
                      | {"eps": eps, "batch_size": batch_size, "processes": ctx.world_size,
                         "example_ids": list(range(len(dataset))),
                         "seed_rule": "seed + batch_index*1009 + eps_index"})


def _with_overrides(steps: list[tuple[str, dict]], overrides: dict) -> list[tuple[str, dict]]:
    return [(a, {k: overrides.get(k, v) for k, v in s.items()}) for a, s in steps]


def _summarise(codes: torch.Tensor, c: dict, *, eps: list[float], names: list[str], norm: str, training: bool,
               seconds: float, ctx: Context, dataset, manifest: dict) -> AutoAttackEvaluation:
    """Worst case over smaller ε, the breakdown, and the flags, from the summed per-example codes."""
    n = codes.shape[1]
    clean = int((codes[0] != 2).sum())
    first: list[str | None] = [None] * n  # the first (ε, attack) that broke each example
    robust_after, raw, broken_by = [], [], []
    for i, e in enumerate(eps):
        raw.append(int((codes[i] == 1).sum()))
        row = codes[i].tolist()
        for k, v in enumerate(row):
            if first[k] is None and v >= 2:
                first[k] = "clean" if v == 2 else f"{names[int(v) - 3]}@{e:g}"
        broken_by.append(list(first))
        pos = [_position(f, e, names) for f in first]
        robust_after.append({a: sum(1 for p in pos if p > j) for j, a in enumerate(names)})
    c |= {"training": int(training), "raw_robust": raw,
          "square_only": sum(1 for k in range(n) if (first[k] or "").startswith("square@"))
          if any(a in names for a in ("apgd-ce", "apgd-t", "fab-t", "apgd-dlr")) and "square" in names else 0}
    flags = checks.from_counts(c, n=n, norm=norm, eps=eps)
    return AutoAttackEvaluation(n=n, clean_correct=clean, eps=eps, attacks=names, robust_after=robust_after,
                                raw_robust=raw, broken_by=broken_by, flags=flags, manifest=manifest, seconds=seconds,
                                skipped=int(getattr(dataset, "skipped", 0)))


def _position(code: str | None, e: float, names: list[str]) -> float:
    """When ``code`` broke the example in the attack order at ε = ``e``: ∞ (robust), −1 (misclassified
    clean, or broken at a smaller ε: before any attack at this one), else the index of the attack."""
    if code is None:
        return math.inf
    if code == "clean" or code.split("@")[1] != f"{e:g}":
        return -1
    return names.index(code.split("@")[0])


def plot_breakdown(result: AutoAttackEvaluation, path) -> Path:
    """Robust accuracy after each attack (one line per ε), clean accuracy first."""
    from robustlens.plots import plt, save_figure

    n = max(result.n, 1)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    labels = ["clean", *result.attacks]
    for e, ra in zip(result.eps, result.robust_after):
        ax.plot(labels, [result.clean_correct / n] + [ra[a] / n for a in result.attacks], marker="o",
                label=f"ε={e:g}")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"{result.manifest['attack']} ({result.manifest['version']}, {result.manifest['norm']}), "
                 f"n={result.n}")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
