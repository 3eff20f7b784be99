"""Objectives: per-example losses to MINIMISE, shape (N,), computed from one forward pass.

An objective sees an :class:`Outputs` (the optimised image, the logits, the activations of the layers it
asked for, and which rows of the original batch are present) and returns a (N,) loss. It names the layers it
needs in ``layers``; the engine captures all of them in one forward pass. Objectives compose::

    NegLogProb(target) + 0.05 * TotalVariation()      # a regularised targeted attack
    -0.5 * ActivationEnergy("_blocks.6")                   # scaled
    as_objective("_blocks.10:12")                   # channel 12 of layer _blocks.10 (feature visualisation)

Per-example data (targets, reference features) is stored for the whole batch and indexed with
``outputs.index``, so it stays aligned when the engine drops finished examples from the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from robustlens.errors import UserError
from robustlens.optim._tensor import flat


@dataclass
class Outputs:
    """What an objective sees: ``x`` the optimised image (N,C,H,W in [0,1], before any transforms),
    ``logits`` (N, classes), ``activations`` by layer name, ``index`` (N,) rows of the original batch."""

    x: torch.Tensor
    logits: torch.Tensor
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    index: torch.Tensor | None = None

    def select(self, t: torch.Tensor) -> torch.Tensor:
        """The rows of a whole-batch tensor ``t`` present in this batch (a batch of one broadcasts)."""
        if t.shape[0] == 1:
            return t.expand(self.logits.shape[0], *t.shape[1:])
        return t if self.index is None else t[self.index.to(t.device)]


class Objective:
    """Base class: ``__call__(outputs) -> (N,)`` loss to minimise; ``layers`` it needs; ``report`` extra
    per-example figures for the history (e.g. the target probability)."""

    layers: tuple[str, ...] = ()

    def __call__(self, out: Outputs) -> torch.Tensor:
        raise NotImplementedError

    def report(self, out: Outputs) -> dict[str, torch.Tensor]:
        return {}

    def __add__(self, other):
        other = as_objective(other)
        return Sum((self, other))

    def __radd__(self, other):
        if isinstance(other, (int, float)) and other == 0:  # sum([...]) starts from 0
            return self
        return as_objective(other) + self

    def __neg__(self):
        return Scaled(self, -1.0)

    def __sub__(self, other):
        return self + (-as_objective(other))

    def __rsub__(self, other):
        return as_objective(other) + (-self)

    def __mul__(self, c: float):
        if not isinstance(c, (int, float)):
            return NotImplemented
        return Scaled(self, float(c))

    __rmul__ = __mul__

    def __truediv__(self, c: float):
        if not isinstance(c, (int, float)):
            return NotImplemented
        return Scaled(self, 1.0 / float(c))


def _union(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n for g in groups for n in g))


class Sum(Objective):
    parts: tuple[Objective, ...]

    def __init__(self, parts: tuple[Objective, ...]):
        flat: list[Objective] = []
        for p in parts:
            flat.extend(p.parts if isinstance(p, Sum) else (p,))
        self.parts = tuple(flat)
        self.layers = _union(*(p.layers for p in self.parts))

    def __call__(self, out):
        return sum(p(out) for p in self.parts)

    def report(self, out):
        return {k: v for p in self.parts for k, v in p.report(out).items()}

    def __repr__(self):
        return " + ".join(map(repr, self.parts))


class Scaled(Objective):
    def __init__(self, inner: Objective, c: float):
        self.inner, self.c = inner, c
        self.layers = inner.layers

    def __call__(self, out):
        return self.c * self.inner(out)

    def report(self, out):
        return self.inner.report(out)

    def __repr__(self):
        return f"{self.c:g} * {self.inner!r}"


class Lambda(Objective):
    """Any function ``Outputs -> (N,)`` as an objective."""

    def __init__(self, fn: Callable[[Outputs], torch.Tensor], layers: tuple[str, ...] = (), name: str = "lambda"):
        self.fn, self.layers, self.name = fn, tuple(layers), name

    def __call__(self, out):
        return self.fn(out)

    def __repr__(self):
        return self.name


class Constant(Objective):
    def __init__(self, value: float):
        self.value = float(value)

    def __call__(self, out):
        return out.logits.new_full((out.logits.shape[0],), self.value)

    def __repr__(self):
        return f"{self.value:g}"


# --- classes ----------------------------------------------------------------------------------------------

def _classes(c: int | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(c, dtype=torch.long).reshape(-1)


class ClassObjective(Objective):
    """Base of the objectives about one class per example (``classes``: (N,) or one for all)."""

    def __init__(self, classes: int | torch.Tensor):
        self.classes = _classes(classes)

    def _rows(self, out: Outputs) -> torch.Tensor:
        return out.select(self.classes.to(out.logits.device))

    def _logp(self, out: Outputs) -> torch.Tensor:
        return F.log_softmax(out.logits.float(), dim=1).gather(1, self._rows(out)[:, None]).squeeze(1)


class NegLogProb(ClassObjective):
    """loss = −log p(c | x) = CE(x, c): minimising it pushes class c up (targeted attacks; the problem set's
    objective). Reports ``target_prob``."""

    def __call__(self, out):
        return -self._logp(out)

    def report(self, out):
        return {"target_prob": self._logp(out).exp()}

    def __repr__(self):
        return "NegLogProb"


class LogProb(ClassObjective):
    """loss = +log p(c | x) = −CE(x, c): minimising it pushes class c down (untargeted attacks move away from
    the label). Reports ``label_prob``."""

    def __call__(self, out):
        return self._logp(out)

    def report(self, out):
        return {"label_prob": self._logp(out).exp()}

    def __repr__(self):
        return "LogProb"


class CWMargin(ClassObjective):
    """Carlini-Wagner margin on logits, floored at −κ. Targeted: max_{j≠t} z_j − z_t; untargeted:
    z_y − max_{j≠y} z_j. Negative once the attack succeeds."""

    def __init__(self, classes, *, targeted: bool, kappa: float = 0.0):
        super().__init__(classes)
        self.targeted, self.kappa = targeted, float(kappa)

    def __call__(self, out):
        z = out.logits.float()
        c = self._rows(out)[:, None]
        zc = z.gather(1, c).squeeze(1)
        other = z.scatter(1, c, float("-inf")).amax(1)
        margin = other - zc if self.targeted else zc - other
        return margin.clamp_min(-self.kappa)

    def report(self, out):
        return {"target_prob" if self.targeted else "label_prob": self._logp(out).exp()}

    def __repr__(self):
        return f"CWMargin({'targeted' if self.targeted else 'untargeted'}, kappa={self.kappa:g})"


# --- features ---------------------------------------------------------------------------------------------

class FeatureDistance(Objective):
    """Squared L2 distance between the activations at ``layer`` and a reference (N or 1, ...), relative to
    the reference's squared norm when ``relative`` (default): ‖φ(x) − φ_ref‖² / ‖φ_ref‖². Reports
    ``feature_distance`` = the (not squared) relative distance."""

    def __init__(self, layer: str, reference: torch.Tensor, *, relative: bool = True):
        self.layer, self.reference, self.relative = layer, reference.detach(), relative
        self.layers = (layer,)

    def distance(self, out: Outputs) -> torch.Tensor:
        ref = flat(out.select(self.reference)).float()
        d = (flat(out.activations[self.layer]).float() - ref).pow(2).sum(1)
        return d / ref.pow(2).sum(1).clamp_min(1e-12) if self.relative else d

    def __call__(self, out):
        return self.distance(out)

    def report(self, out):
        return {"feature_distance": self.distance(out).sqrt()}

    def __repr__(self):
        return f"FeatureDistance({self.layer})"


class ActivationEnergy(Objective):
    """DeepDream: loss = −mean of the squared activations at ``layer`` (maximises the layer's L2 norm)."""

    def __init__(self, layer: str):
        self.layer = layer
        self.layers = (layer,)

    def __call__(self, out):
        return -flat(out.activations[self.layer]).float().pow(2).mean(1)

    def __repr__(self):
        return f"ActivationEnergy({self.layer})"


class Channel(Objective):
    """Feature visualisation: loss = −mean activation of ``channel`` at ``layer`` (over all positions), or
    of the single neuron at the centre when ``neuron``."""

    def __init__(self, layer: str, channel: int, *, neuron: bool = False):
        self.layer, self.channel, self.neuron = layer, int(channel), neuron
        self.layers = (layer,)

    def __call__(self, out):
        a = out.activations[self.layer]
        if a.dim() == 2:  # a linear layer: one value per channel
            return -a[:, self.channel].float()
        a = a[:, self.channel].float()
        if self.neuron:
            return -a[:, a.shape[1] // 2, a.shape[2] // 2]
        return -a.reshape(a.shape[0], -1).mean(1)

    def __repr__(self):
        return f"{'Neuron' if self.neuron else 'Channel'}({self.layer}:{self.channel})"


class TotalVariation(Objective):
    """Mean absolute difference between neighbouring pixels of the optimised image (a smoothness prior)."""

    def __call__(self, out):
        x = out.x.float()
        dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
        dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
        return dh + dw

    def __repr__(self):
        return "TotalVariation"


class PerRow(Objective):
    """Row i of the original batch uses objective ``parts[i]`` (e.g. inversion at several layers in one
    batch). Layers are the union, so one forward pass serves them all."""

    def __init__(self, parts: list[Objective]):
        self.parts = tuple(parts)
        self.layers = _union(*(p.layers for p in self.parts))

    def _pick(self, values: list[torch.Tensor], out: Outputs) -> torch.Tensor:
        idx = out.index if out.index is not None else torch.arange(out.logits.shape[0], device=out.logits.device)
        stacked = torch.stack(values, 0)  # (parts, n)
        return stacked.gather(0, idx.to(stacked.device)[None]).squeeze(0)

    def __call__(self, out):
        return self._pick([p(out) for p in self.parts], out)

    def report(self, out):
        reports = [p.report(out) for p in self.parts]
        keys = set.intersection(*(set(r) for r in reports)) if reports else set()
        return {k: self._pick([r[k] for r in reports], out) for k in keys}

    def __repr__(self):
        return f"PerRow({', '.join(map(repr, self.parts))})"


def parse_channel(spec: str) -> tuple[str, int]:
    """``"layer:channel"`` -> (layer, channel); raises :class:`UserError` on a bad spec."""
    layer, sep, ch = spec.rpartition(":")
    if not sep or not layer or not ch.strip().isdigit():
        raise UserError(f"objective {spec!r}: expected LAYER:CHANNEL, e.g. _blocks.10:12")
    return layer.strip(), int(ch)


def as_objective(obj) -> Objective:
    """An :class:`Objective`; a number is a constant, ``"layer:channel"`` a :class:`Channel`, a callable a
    :class:`Lambda`."""
    if isinstance(obj, Objective):
        return obj
    if isinstance(obj, (int, float)):
        return Constant(obj)
    if isinstance(obj, str):
        return Channel(*parse_channel(obj))
    if callable(obj):
        return Lambda(obj)
    raise TypeError(f"cannot make an objective from {type(obj).__name__}")
