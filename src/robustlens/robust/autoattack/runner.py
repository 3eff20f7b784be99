"""AutoAttack: a fixed ensemble of attacks, each run only on the examples still robust; an example is robust
only if every attack fails on it (the per-example worst case).

Versions (Croce & Hein 2020; the reference's settings):

- ``standard``: APGD-CE (100 steps, 1 restart), APGD-T (targeted DLR, 9 target classes, 100 steps each),
  FAB-T (9 target classes, 100 steps each), Square (5000 queries);
- ``plus``: APGD-CE and APGD-DLR with 5 restarts each, Square, APGD-T, FAB-T (the reference's untargeted FAB
  with 5 restarts is not included);
- ``rand`` (randomised models): APGD-CE and APGD-DLR on the expectation of the logits over 20 forward passes
  (EOT on the logits; the reference averages the 20 gradients instead).

:func:`autoattack` attacks one tensor batch at one ε; :func:`evaluate_autoattack` a dataset at several ε,
batched, under ``torchrun`` like :func:`robustlens.robust.evaluate.evaluate_robustness` (batch ``b`` goes to
rank ``b mod K`` and is attacked with seed ``seed + b·1009 + i`` at the i-th ε: the same counts as one process).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

import robustlens.robust.autoattack.flags as checks
from robustlens._version import version as robustlens_version
from robustlens.optim import speed
from robustlens.optim.local import LocalEvaluator
from robustlens.optim.prepare import PreparedModel, prepare
from robustlens.optim.threat import make_threat
from robustlens.robust.autoattack.apgd import apgd_ce, apgd_t
from robustlens.robust.autoattack.fab import fab_t
from robustlens.robust.autoattack.flags import Flag
from robustlens.robust.autoattack.square import square

VERSIONS: dict[str, list[tuple[str, dict]]] = {
    "standard": [("apgd-ce", {"steps": 100, "restarts": 1}), ("apgd-t", {"steps": 100, "targets": 9}),
                 ("fab-t", {"steps": 100, "targets": 9}), ("square", {"queries": 5000, "p_init": 0.8})],
    "plus": [("apgd-ce", {"steps": 100, "restarts": 5}), ("apgd-dlr", {"steps": 100, "restarts": 5}),
             ("square", {"queries": 5000, "p_init": 0.8}), ("apgd-t", {"steps": 100, "targets": 9}),
             ("fab-t", {"steps": 100, "targets": 9})],
    "rand": [("apgd-ce", {"steps": 100, "restarts": 1, "eot": 20}),
             ("apgd-dlr", {"steps": 100, "restarts": 1, "eot": 20})],
}
ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")
WHITE_BOX = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t")
SEED_STRIDE = 1009
LARGE_EPS_EXAMPLES, LARGE_EPS_STEPS = 100, 20


def plan(attack: str = "autoattack", version: str = "standard") -> list[tuple[str, dict]]:
    """The (attack, settings) list for ``attack`` (``autoattack`` or one of :data:`ATTACKS`) and ``version``."""
    if version not in VERSIONS:
        raise ValueError(f"unknown version {version!r}; use one of {', '.join(VERSIONS)}")
    if attack == "autoattack":
        return [(a, dict(s)) for a, s in VERSIONS[version]]
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; use autoattack or one of {', '.join(ATTACKS)}")
    found = {a: s for a, s in VERSIONS["standard"] + VERSIONS[version]}
    settings = found.get(attack) or dict(found["apgd-ce"], restarts=1)
    return [(attack, dict(settings))]


class EOT(nn.Module):
    """The mean of ``samples`` forward passes of a randomised ``model`` (expectation over transformation)."""

    def __init__(self, model: nn.Module, samples: int):
        super().__init__()
        self.model, self.samples = model, int(samples)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(x).float() for _ in range(self.samples)]).mean(0)


def run_attack(name: str, settings: dict, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str,
               eps: float, seed: int) -> torch.Tensor:
    """Candidates (N,C,H,W) of one attack of :data:`ATTACKS` with its ``settings``."""
    s = dict(settings)
    if s.pop("eot", 1) > 1:
        model = EOT(model, settings["eot"])
    if name in ("apgd-ce", "apgd-dlr"):
        return apgd_ce(model, x, y, norm=norm, eps=eps, seed=seed, loss=name[5:], **s)
    if name == "apgd-t":
        return apgd_t(model, x, y, norm=norm, eps=eps, seed=seed, **s)
    # L∞ Square on a chain of local layers recomputes only what each window changes (robustlens.optim.local)
    evaluator = LocalEvaluator.build(model, x[:1]) if name == "square" and norm == "linf" else None
    if evaluator is not None:
        return square(model, x, y, norm=norm, eps=eps, seed=seed, evaluator=evaluator, **s)
    # FAB and Square run their own loops on the engine's prepared model: BatchNorm folded, channels-last
    # weights and inputs (a model without BatchNorm too), float32 (they decide success from every pass)
    fp32 = dataclasses.replace(speed.current(), precision="fp32", compile=False)
    with prepare(model, x, fp32, hooks=False) as prepared:
        fast = ExactLogits(prepared)
        if name == "fab-t":
            return fab_t(fast, x, y, norm=norm, eps=eps, **s)
        return square(fast, x, y, norm=norm, eps=eps, seed=seed, evaluator=None, **s)


class ExactLogits(nn.Module):
    """A prepared model (:func:`robustlens.optim.prepare.prepare`) as a module: its float32 ``exact`` pass, the
    input put in the prepared memory format (differentiable, so FAB's gradients flow)."""

    def __init__(self, prepared: PreparedModel):
        super().__init__()
        self.prepared = prepared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prepared.exact(x)


@dataclass
class AutoAttackResult:
    """One batch at one ε: ``adversarial`` (N,C,H,W) the breaking point per example (x₀ where none),
    ``clean``/``robust`` (N,) bool, ``broken_by`` per example (``"clean"``: misclassified unattacked, an attack
    name, or None: robust), ``robust_after`` accuracy after each attack (and ``"clean"``), ``seconds`` per
    attack, ``flags``, ``settings`` (the manifest of what ran)."""

    adversarial: torch.Tensor
    clean: torch.Tensor
    robust: torch.Tensor
    broken_by: list[str | None]
    robust_after: dict[str, float]
    seconds: dict[str, float]
    flags: list[Flag] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.float().mean())

    def broken_by_counts(self) -> dict[str, int]:
        """How many examples each attack broke first (``"clean"``: misclassified unattacked; ``"robust"``)."""
        out: dict[str, int] = {}
        for b in self.broken_by:
            out[b or "robust"] = out.get(b or "robust", 0) + 1
        return out


def _in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], idx: torch.Tensor, batch_size: int) -> list:
    return [(idx[s:s + batch_size], fn(idx[s:s + batch_size])) for s in range(0, len(idx), batch_size)]


def model_counts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor, *, norm: str,
                 large_eps: bool, seed: int) -> dict:
    """The per-batch figures behind the flags (see :func:`robustlens.robust.autoattack.flags.from_counts`)."""
    idx = clean.nonzero().squeeze(1)
    with torch.no_grad():
        logits = model(x)
    c = {"correct": int(len(idx)), "zero_grad": checks.zero_gradient_count(model, x[idx], y[idx]) if len(idx) else 0,
         "probabilities": int(checks.looks_like_probabilities(logits)),
         "nondeterministic": int(checks.nondeterministic(model, x)), "large_tried": 0, "large_robust": 0}
    if large_eps and len(idx):
        sub = idx[:LARGE_EPS_EXAMPLES]
        big = checks.whole_box_eps(norm, x)
        cand = apgd_ce(model, x[sub], y[sub], norm=norm, eps=big, steps=LARGE_EPS_STEPS, seed=seed)
        with torch.no_grad():
            c["large_tried"], c["large_robust"] = len(sub), int((model(cand).argmax(1) == y[sub]).sum())
    return c


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf", eps: float,
               attack: str = "autoattack", version: str = "standard", seed: int = 0, batch_size: int = 500,
               checks_on: bool = True, attacks_plan: list[tuple[str, dict]] | None = None,
               on_attack: Callable[[str, float], None] | None = None) -> AutoAttackResult:
    """Attack ``x`` (N,C,H,W in [0,1]) with labels ``y`` (N,) at ``eps`` (pixel units) with the attacks of
    ``attack``/``version`` in turn, each on the examples still robust (in chunks of ``batch_size``). With
    ``checks_on`` the model checks of :mod:`~robustlens.robust.autoattack.flags` run too (eval mode is used;
    the model's modes are restored). ``attacks_plan`` replaces the (attack, settings) list of :func:`plan`;
    ``on_attack(name, robust_accuracy)`` is called after each attack (progress bars)."""
    steps = attacks_plan or plan(attack, version)
    threat = make_threat(norm, eps)
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        robust, adv = clean.clone(), x.clone()
        broken_by: list[str | None] = [None if c else "clean" for c in clean.tolist()]
        after, seconds = {"clean": float(clean.float().mean())}, {}
        for i, (name, settings) in enumerate(steps):
            t0 = time.perf_counter()

            def attack_rows(rows: torch.Tensor, name=name, settings=settings, i=i) -> torch.Tensor:
                return run_attack(name, settings, model, x[rows], y[rows], norm=norm, eps=eps,
                                  seed=seed + 7919 * i + int(rows[0]))

            for rows, cand in _in_chunks(attack_rows, robust.nonzero().squeeze(1), batch_size):
                with torch.no_grad():
                    broke = (model(cand).argmax(1) != y[rows]) & threat.contains(cand, x[rows], tol=1e-6)
                adv[rows[broke]] = cand[broke]
                robust[rows[broke]] = False
                for r in rows[broke].tolist():
                    broken_by[r] = name
            after[name] = float(robust.float().mean())
            seconds[name] = time.perf_counter() - t0
            if on_attack is not None:
                on_attack(name, after[name])
        counts = model_counts(model, x, y, clean, norm=norm, large_eps=checks_on, seed=seed) if checks_on else {}
    finally:
        for m, t in zip(model.modules(), modes):
            m.training = t
    if counts:
        counts["training"] = int(any(modes))
        counts["square_only"] = broken_by.count("square") if any(a in WHITE_BOX for a, _ in steps) else 0
    flags = checks.from_counts(counts, n=len(y), norm=norm, eps=[eps]) if counts else []
    return AutoAttackResult(adversarial=adv, clean=clean, robust=robust, broken_by=broken_by, robust_after=after,
                            seconds=seconds, flags=flags, counts=counts,
                            settings=manifest_settings(steps, attack=attack, version=version, norm=norm, seed=seed))


def manifest_settings(steps: list[tuple[str, dict]], *, attack: str, version: str, norm: str, seed: int) -> dict:
    """Every setting of what ran (enough to rerun it), JSON-ready."""
    return {"attack": attack, "version": version, "norm": norm, "seed": seed,
            "attacks": [{"name": a, **s} for a, s in steps],
            "versions": {"robustlens": robustlens_version(), "torch": torch.__version__}}
