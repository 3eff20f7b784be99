"""Objectives: arithmetic, layers they need, per-row indexing, the class losses and regularisers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustlens.errors import UserError
from robustlens.optim.objectives import (
    ActivationEnergy,
    Channel,
    CWMargin,
    FeatureDistance,
    LogProb,
    NegLogProb,
    Outputs,
    PerRow,
    TotalVariation,
    as_objective,
    parse_channel,
)


def outputs(n: int = 3, classes: int = 6, seed: int = 0) -> Outputs:
    g = torch.Generator().manual_seed(seed)
    acts = {"a": torch.randn(n, 4, 5, 5, generator=g), "b": torch.randn(n, 7, generator=g)}
    return Outputs(x=torch.rand(n, 3, 8, 8, generator=g), logits=torch.randn(n, classes, generator=g),
                   activations=acts, index=torch.arange(n))


def test_arithmetic_composes_per_example():
    out = outputs()
    a, b = ActivationEnergy("a"), Channel("a", 2)
    combo = a + 0.5 * b - b / 4 + 1.0
    expected = a(out) + 0.5 * b(out) - 0.25 * b(out) + 1.0
    assert torch.allclose(combo(out), expected)
    assert torch.allclose((-a)(out), -a(out))
    assert torch.allclose(sum([a, b])(out), a(out) + b(out))
    assert combo.layers == ("a",)
    assert (ActivationEnergy("a") + Channel("b", 1)).layers == ("a", "b")
    assert combo(out).shape == (3,)


def test_channel_shorthand_and_bad_specs():
    obj = as_objective("_blocks.10:12")
    assert isinstance(obj, Channel) and obj.layer == "_blocks.10" and obj.channel == 12
    assert parse_channel("layer4.2.conv1:3") == ("layer4.2.conv1", 3)
    for bad in ["layer4", "layer4:", ":3", "layer4:x"]:
        with pytest.raises(UserError, match="LAYER:CHANNEL"):
            parse_channel(bad)
    out = outputs()
    assert torch.allclose(Channel("a", 1)(out), -out.activations["a"][:, 1].mean((1, 2)))
    assert torch.allclose(Channel("b", 3)(out), -out.activations["b"][:, 3])
    assert torch.allclose(Channel("a", 1, neuron=True)(out), -out.activations["a"][:, 1, 2, 2])


def test_class_losses():
    out = outputs()
    t = torch.tensor([1, 2, 3])
    logp = F.log_softmax(out.logits, 1)
    assert torch.allclose(NegLogProb(t)(out), -logp[torch.arange(3), t])
    assert torch.allclose(LogProb(t)(out), -F.cross_entropy(out.logits, t, reduction="none"))
    assert torch.allclose(NegLogProb(t).report(out)["target_prob"], logp.exp()[torch.arange(3), t])
    z = out.logits
    other = torch.stack([torch.cat([z[i, :t[i]], z[i, t[i] + 1:]]).max() for i in range(3)])
    zt = z[torch.arange(3), t]
    assert torch.allclose(CWMargin(t, targeted=True)(out), (other - zt).clamp_min(0))
    assert torch.allclose(CWMargin(t, targeted=False, kappa=5)(out), (zt - other).clamp_min(-5))


def test_rows_follow_the_batch_index():
    """When the engine drops rows, per-example data is indexed by the rows that remain."""
    out = outputs(n=2)
    out.index = torch.tensor([0, 3])
    t = torch.tensor([1, 2, 3, 4])
    assert torch.allclose(NegLogProb(t)(out), NegLogProb(torch.tensor([1, 4]))(Outputs(x=out.x, logits=out.logits)))
    plain = Outputs(x=out.x, logits=out.logits)
    assert torch.allclose(NegLogProb(5)(out), NegLogProb(torch.tensor([5, 5]))(plain))  # one class broadcasts


def test_feature_distance_relative_and_per_row():
    out = outputs()
    ref = out.activations["a"][:1] * 2
    d = FeatureDistance("a", ref)(out)
    manual = (out.activations["a"] - ref).flatten(1).pow(2).sum(1) / ref.flatten(1).pow(2).sum()
    assert torch.allclose(d, manual)
    same = Outputs(x=out.x, logits=out.logits, activations={"a": ref.expand(3, -1, -1, -1)})
    assert torch.allclose(FeatureDistance("a", ref)(same), torch.zeros(3))
    per_row = PerRow([ActivationEnergy("a"), Channel("b", 0), TotalVariation()])
    v = per_row(out)
    assert torch.allclose(v, torch.stack([ActivationEnergy("a")(out)[0], Channel("b", 0)(out)[1], TotalVariation()(out)[2]]))
    assert set(per_row.layers) == {"a", "b"}


def test_total_variation():
    flat = Outputs(x=torch.full((2, 3, 5, 5), 0.3), logits=torch.zeros(2, 2))
    assert torch.equal(TotalVariation()(flat), torch.zeros(2))
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., ::2] = 1.0
    assert float(TotalVariation()(Outputs(x=stripes, logits=torch.zeros(1, 2)))) == pytest.approx(1.0)


def test_bad_objective_type():
    with pytest.raises(TypeError):
        as_objective([1, 2])
