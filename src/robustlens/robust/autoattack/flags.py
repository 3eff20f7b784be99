"""Warning flags: signs that a robustness evaluation may be fooled (gradient masking, wrong outputs, randomness).

After Carlini et al. 2019 ("On evaluating adversarial robustness") and Croce & Hein 2020 (AutoAttack's
checks). Each check returns a :class:`Flag` when it fires, else None; the thresholds are module constants.

- ``vanishing_gradients``: the input gradient of the logit margin z_y − max_{i≠y} z_i is zero (max |g| ≤
  1e-12) on more than :data:`ZERO_GRAD_FRACTION` of the correctly classified examples (input quantisation,
  saturated softmax outputs, non-differentiable layers);
- ``probability_outputs``: every output in [0,1] and every row summing to 1: the model returns softmax
  probabilities, not logits (cross-entropy on them saturates);
- ``nondeterministic``: two forward passes of the same batch differ (a randomised model: use ``--version
  rand``);
- ``training_mode``: a module of the model was in training mode when handed over (evaluated in eval mode);
- ``large_eps_not_broken``: a short APGD-CE at an ε that allows any image of the box leaves examples robust;
- ``square_beats_white_box``: the black-box Square attack broke more than :data:`SQUARE_ALPHA` of the examples
  that every gradient attack missed (the reference's threshold);
- ``not_monotone_in_eps``: robust accuracy, each ε attacked independently, grows with ε somewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from robustlens.robust.autoattack.losses import margin

ZERO_GRAD_FRACTION = 0.01
SQUARE_ALPHA = 0.002
PROB_TOL = 1e-5


@dataclass(frozen=True)
class Flag:
    """``code`` (stable identifier), ``message`` (one line for people), ``value`` (the figure behind it)."""

    code: str
    message: str
    value: float

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "value": self.value}


def zero_gradient_count(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """How many examples of (N,C,H,W) ``x`` have an all-zero input gradient of the margin (N,)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        m = margin(model(x), y)
        if not m.requires_grad:  # the output does not depend on the input through autograd at all
            return x.shape[0]
        g, = torch.autograd.grad(m.sum(), x, allow_unused=True)
    if g is None:
        return x.shape[0]
    return int((g.flatten(1).abs().amax(1) <= 1e-12).sum())


@torch.no_grad()
def looks_like_probabilities(logits: torch.Tensor) -> bool:
    """True when every value of (N, K) ``logits`` is in [0,1] and every row sums to 1."""
    z = logits.float()
    return bool(z.min() > -PROB_TOL and z.max() < 1 + PROB_TOL and ((z.sum(1) - 1).abs() < 1e-3).all())


@torch.no_grad()
def nondeterministic(model: nn.Module, x: torch.Tensor) -> bool:
    """True when two forward passes of ``x`` differ by more than float rounding."""
    a, b = model(x).float(), model(x).float()
    scale = max(float(a.abs().max()), 1.0)
    return not torch.allclose(a, b, rtol=1e-5, atol=1e-6 * scale)


def in_training_mode(model: nn.Module) -> bool:
    return any(m.training for m in model.modules())


def whole_box_eps(norm: str, x: torch.Tensor) -> float:
    """An ε that lets any point of [0,1]ᵈ be reached from any x₀: 1 (L∞), √d (L2), d (L1)."""
    d = x[0].numel()
    return {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}[norm]


def from_counts(c: dict, *, n: int, norm: str, eps: list[float]) -> list[Flag]:
    """The flags from summed counts (keys: ``correct``, ``zero_grad``, ``probabilities``, ``nondeterministic``,
    ``training``, ``large_tried``, ``large_robust``, ``square_only``, ``raw_robust`` (one per ε))."""
    out: list[Flag] = []
    correct = max(c["correct"], 1)
    if c["zero_grad"] > ZERO_GRAD_FRACTION * correct:
        out.append(Flag("vanishing_gradients", f"{c['zero_grad']} of {c['correct']} correctly classified examples "
                        "have a zero input gradient: gradient attacks are blind there (masked gradients?)",
                        c["zero_grad"] / correct))
    if c["probabilities"]:
        out.append(Flag("probability_outputs", "the model's outputs are in [0,1] and sum to 1: it returns "
                        "probabilities, not logits", 1.0))
    if c["nondeterministic"]:
        out.append(Flag("nondeterministic", "two forward passes of the same batch differ: a randomised model "
                        "(evaluate with --version rand)", 1.0))
    if c["training"]:
        out.append(Flag("training_mode", "the model was in training mode; it was evaluated in eval mode", 1.0))
    if c["large_robust"] > 0:
        out.append(Flag("large_eps_not_broken", f"{c['large_robust']} of {c['large_tried']} examples stay robust "
                        f"at a {norm} ε that reaches the whole image box: the attack is not working (masking?)",
                        c["large_robust"] / max(c["large_tried"], 1)))
    if c["square_only"] > SQUARE_ALPHA * max(n, 1):
        out.append(Flag("square_beats_white_box", f"Square (black-box) broke {c['square_only']} examples that "
                        "every gradient attack missed: gradients are partly masked", c["square_only"] / max(n, 1)))
    raw = c.get("raw_robust", [])
    bad = [f"{eps[i]:g}->{eps[i + 1]:g}" for i in range(len(raw) - 1) if raw[i + 1] > raw[i]]
    if bad:
        out.append(Flag("not_monotone_in_eps", "robust accuracy, each ε attacked on its own, grows with ε at "
                        + ", ".join(bad) + ": the attack is unreliable", float(len(bad))))
    return out
