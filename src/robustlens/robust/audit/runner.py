"""Running an audit of one model, unit by unit, each finished unit journalled (:mod:`.journal`).

Units of model ``m`` and batch ``b`` (the dataset cut into consecutive batches of ``batch_size``; under
``torchrun`` batch ``b`` goes to rank ``b mod K``):

- ``m/clean/b``: predictions and top-1 confidences on the clean images;
- ``m/aa/e{i}/b/{attack}``: one attack of AutoAttack (standard) at the i-th ε on the examples of the batch still
  robust after the attacks before it: which ones it broke, and the prediction and confidence there;
- ``m/pgd/b``: PGD at every ε (as ``robustlens evaluate --attack pgd``);
- ``m/checks/b``: the figures behind the gradient-masking flags.

Seeds are those of ``robustlens evaluate``: the i-th ε of batch ``b`` is attacked with ``s = seed + b·1009 + i``,
attack j of the AutoAttack list with ``s + 7919·j + r`` (r: the first still-robust row of the batch), so each
unit depends only on its own inputs: a resumed run, an uninterrupted one, one process or K give the same
numbers, and the AutoAttack figures are those of ``robustlens evaluate --attack autoattack`` with the same
``--batch-size`` and ``--seed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader

from robustlens.optim.steps import madry_step_size
from robustlens.optim.threat import make_threat
from robustlens.robust.audit.journal import Journal
from robustlens.robust.audit.passes import PassCounter
from robustlens.robust.autoattack.runner import model_counts, plan, run_attack
from robustlens.robust.distributed import Context
from robustlens.robust.evaluate import SEED_STRIDE, batches_of

ATTACK_SEED_STRIDE = 7919


@dataclass
class AuditPlan:
    """What to run on each model: ``eps`` ascending, AutoAttack's ``attacks`` (name, settings), PGD settings."""

    norm: str
    eps: list[float]
    batch_size: int = 100
    seed: int = 0
    pgd_steps: int = 40
    pgd_step_size: float | None = None
    pgd_restarts: int = 1
    pgd_start: str = "random"
    attacks: list[tuple[str, dict]] = field(default_factory=lambda: plan("autoattack", "standard"))

    def pgd_step_sizes(self) -> list[float]:
        return [self.pgd_step_size or madry_step_size(e, self.pgd_steps) for e in self.eps]


def _top1(model: nn.Module, x: torch.Tensor) -> tuple[list[int], list[float]]:
    with torch.no_grad():
        p = model(x).float().softmax(1)
    conf, pred = p.max(1)
    return pred.tolist(), conf.tolist()


class BatchAuditor:
    """The units of one model on one batch ``x`` (N,C,H,W), ``y`` (N,), batch index ``b``; records come from
    the journal when done, else are computed and journalled. ``tick(name)`` after each attack unit."""

    def __init__(self, model: nn.Module, key: str, journal: Journal, p: AuditPlan, counter: PassCounter,
                 tick: Callable[[str, float], None]):
        self.model, self.key, self.journal, self.p, self.counter, self.tick = model, key, journal, p, counter, tick

    def _unit(self, key: str, compute: Callable[[], dict]) -> dict:
        found = self.journal.get(key)
        if found is not None:
            return found
        self.counter.take()
        t0 = time.perf_counter()
        record = compute()
        record["seconds"] = time.perf_counter() - t0
        record["passes"] = self.counter.take()
        return self.journal.put(key, record)

    def run(self, x: torch.Tensor, y: torch.Tensor, b: int) -> None:
        self.model.eval()
        clean = self._unit(f"{self.key}/clean/b{b}", lambda: dict(zip(("pred", "conf"), _top1(self.model, x))))
        correct = torch.tensor(clean["pred"], device=y.device) == y
        for i, e in enumerate(self.p.eps):
            robust = correct.clone()
            base = self.p.seed + b * SEED_STRIDE + i
            for j, (name, settings) in enumerate(self.p.attacks):
                rec = self._unit(f"{self.key}/aa/e{i}/b{b}/{name}",
                                 lambda: self._attack(name, settings, x, y, robust, e, base + ATTACK_SEED_STRIDE * j))
                robust[torch.tensor(rec["broke"], dtype=torch.long, device=y.device)] = False
                self.tick(name, rec["seconds"])
        self._unit(f"{self.key}/pgd/b{b}", lambda: self._pgd(x, y, correct, b))
        self.tick("pgd", 0.0)
        self._unit(f"{self.key}/checks/b{b}", lambda: model_counts(self.model, x, y, correct, norm=self.p.norm,
                                                                   large_eps=(b == 0), seed=self.p.seed))

    def _attack(self, name: str, settings: dict, x: torch.Tensor, y: torch.Tensor, robust: torch.Tensor,
                eps: float, seed: int) -> dict:
        """As one attack step of :func:`robustlens.robust.autoattack.autoattack` on the rows still robust."""
        rows = robust.nonzero().squeeze(1)
        if not len(rows):
            return {"broke": [], "pred": [], "conf": []}
        cand = run_attack(name, settings, self.model, x[rows], y[rows], norm=self.p.norm, eps=eps,
                          seed=seed + int(rows[0]))
        pred, conf = _top1(self.model, cand)
        inside = make_threat(self.p.norm, eps).contains(cand, x[rows], tol=1e-6)
        broke = (torch.tensor(pred, device=y.device) != y[rows]) & inside
        keep = broke.nonzero().squeeze(1).tolist()
        return {"broke": rows[broke].tolist(), "pred": [pred[k] for k in keep], "conf": [conf[k] for k in keep]}

    def _pgd(self, x: torch.Tensor, y: torch.Tensor, correct: torch.Tensor, b: int) -> dict:
        """PGD at each ε as :func:`robustlens.robust.evaluate.evaluate_robustness` (same seeds)."""
        from robustlens.recipes.attacks import pgd

        alive, robust = correct.clone(), []
        for i, (e, s) in enumerate(zip(self.p.eps, self.p.pgd_step_sizes())):
            if bool(alive.any()):
                idx = alive.nonzero().squeeze(1)
                adv = pgd(self.model, x[idx], y[idx], norm=self.p.norm, eps=e, step_size=s, steps=self.p.pgd_steps,
                          random_start=self.p.pgd_start == "random", restarts=self.p.pgd_restarts, early_stop=True,
                          seed=self.p.seed + b * SEED_STRIDE + i)
                with torch.no_grad():
                    alive[idx] = self.model(adv).argmax(1) == y[idx]
            robust.append(int(alive.sum()))
        return {"robust": robust}


def audit_batches(model: nn.Module, dataset, key: str, journal: Journal, p: AuditPlan, *, ctx: Context = Context(),
                  progress: bool = False, label: str = "") -> dict:
    """Run (or find journalled) every unit of this rank's batches; returns this process's cost figures."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    all_batches = batches_of(len(dataset), p.batch_size)
    mine = list(range(ctx.rank, len(all_batches), ctx.world_size))
    show = progress and ctx.is_main
    bars = {name: tqdm(total=len(mine) * (len(p.eps) if name != "pgd" else 1), desc=f"{label} {name}",
                       unit="batch", position=k, leave=True, disable=not show, dynamic_ncols=True)
            for k, name in enumerate([a for a, _ in p.attacks] + ["pgd"])}

    def tick(name: str, seconds: float) -> None:
        bars[name].update(1)

    counter = PassCounter(tuple(dataset[0][0].shape))
    auditor = BatchAuditor(model, key, journal, p, counter, tick)
    t0 = time.perf_counter()
    modes = [m.training for m in model.modules()]
    loader = DataLoader(dataset, batch_sampler=[all_batches[b] for b in mine])
    try:
        with counter.counting():
            for b, (x, y) in zip(mine, loader):
                auditor.run(x.to(device), y.to(device), b)
    finally:
        for bar in bars.values():
            bar.close()
        for m, t in zip(model.modules(), modes):
            m.training = t
    return {"wall_seconds": time.perf_counter() - t0, "batches": len(mine)}
