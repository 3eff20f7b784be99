"""The engine's named pieces, each on its own: step rules and schedules, starts, criteria, best-iterate and
active-set bookkeeping, model preparation — and the guarantee they give together: a success counts only when
the returned image (8-bit, inside the ball) succeeds."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustlens.optim.criteria import Targeted, Untargeted
from robustlens.optim.engine import optimize
from robustlens.optim.objectives import CWMargin, LogProb, NegLogProb, Outputs
from robustlens.optim.prepare import prepare
from robustlens.optim.speed import Speed
from robustlens.optim.starts import AtInput, AtTensor, RandomInThreat, as_start
from robustlens.optim.steps import Adam, Constant, Cosine, SteepestStep
from robustlens.optim.threat import L2, Linf, Unconstrained
from robustlens.optim.tracker import ActiveSet, BestIterates
from robustlens.recipes.attacks import EightBit


def test_schedules():
    assert Constant()(3, 10) == 1.0
    c = Cosine()
    assert c(0, 10) == pytest.approx(1.0) and c(5, 10) == pytest.approx(0.5) and c(10, 10) == pytest.approx(0.0)


def test_steepest_step_is_the_threat_models_direction():
    g = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    z = torch.rand(3, 2, 4, 4)
    for threat in (Linf(0.1), L2(0.5)):
        step = SteepestStep(0.01)
        step.start(z, 5)
        nxt = step.step(z, g, loss=torch.zeros(3), t=0, threat=threat, x0=z)
        assert torch.allclose(nxt, z - 0.01 * threat.ascent_direction(g, z))
    assert torch.allclose((z - SteepestStep(0.01).step(z, g, loss=torch.zeros(3), t=0, threat=Linf(1), x0=z)) / 0.01,
                          g.sign())


def test_adam_matches_torch_optim_adam():
    """Our per-example Adam against torch.optim.Adam on the same quadratic."""
    target = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    z_ours = torch.zeros(4, 3)
    z_torch = torch.zeros(4, 3, requires_grad=True)
    ours, ref = Adam(0.05), torch.optim.Adam([z_torch], lr=0.05)
    ours.start(z_ours, 20)
    for t in range(20):
        grad = 2 * (z_ours - target)
        z_ours = ours.step(z_ours, grad, loss=torch.zeros(4), t=t, threat=Unconstrained(), x0=z_ours)
        ref.zero_grad()
        ((z_torch - target) ** 2).sum().backward()
        ref.step()
    assert torch.allclose(z_ours, z_torch.detach(), atol=1e-6)


def test_adam_rows_can_be_dropped():
    rule = Adam(0.1)
    z = torch.zeros(3, 2)
    rule.start(z, 5)
    rule.step(z, torch.ones(3, 2), loss=torch.zeros(3), t=0, threat=Unconstrained(), x0=z)
    rule.keep(torch.tensor([True, False, True]))
    assert rule.m.shape == (2, 2) and rule.v.shape == (2, 2)


def test_starts():
    x0 = torch.full((2, 3, 4, 4), 0.5)
    gen = torch.Generator().manual_seed(0)
    threat = Linf(0.1)
    assert torch.equal(AtInput()(x0, threat, gen, 0), x0)
    later = AtInput()(x0, threat, gen, 1)
    assert not torch.equal(later, x0) and bool(threat.contains(later, x0).all())
    far = torch.ones_like(x0)
    projected = AtTensor(far)(x0, threat, gen, 0)
    assert torch.allclose(projected, x0 + 0.1)
    assert bool(threat.contains(RandomInThreat()(x0, threat, gen, 0), x0).all())
    assert isinstance(as_start(None), AtInput) and isinstance(as_start(far), AtTensor)
    with pytest.raises(TypeError):
        as_start("random")
    with pytest.raises(ValueError, match="shape"):
        AtTensor(torch.zeros(1, 3, 4, 4))(x0, threat, gen, 0)


def test_criteria_and_their_objectives():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    out = Outputs(x=torch.zeros(2, 1), logits=logits, index=torch.tensor([0, 1]))
    assert Targeted(torch.tensor([0, 1]))(out).tolist() == [True, False]
    assert Untargeted(torch.tensor([0, 1]))(out).tolist() == [False, True]
    assert Targeted(2).on(logits).tolist() == [False, True]  # one class for every row
    # the subset of rows present in a batch is looked up through outputs.index
    sub = Outputs(x=torch.zeros(1, 1), logits=logits[1:], index=torch.tensor([1]))
    assert Targeted(torch.tensor([0, 2]))(sub).tolist() == [True]
    assert isinstance(Targeted([1]).objective("ce"), NegLogProb)
    assert isinstance(Untargeted([1]).objective("ce"), LogProb)
    assert isinstance(Untargeted([1]).objective("cw"), CWMargin)
    with pytest.raises(ValueError, match="unknown loss"):
        Targeted([1]).objective("logprob")


def test_best_iterates_prefer_success_then_lower_loss_and_skip_frozen_rows():
    x0 = torch.zeros(3, 1)
    best = BestIterates(x0)
    rows = torch.arange(3)
    no = torch.zeros(3, dtype=torch.bool)
    best.update(rows, torch.ones(3, 1), torch.tensor([1.0, 1.0, 1.0]), no, torch.ones(3, dtype=torch.bool), no)
    # row 0: lower loss, not successful -> better; row 1: successful with a higher loss -> better (success wins);
    # row 2: frozen -> ignored
    best.update(rows, torch.full((3, 1), 2.0), torch.tensor([0.5, 9.0, 0.1]), torch.tensor([False, True, True]),
                torch.ones(3, dtype=torch.bool), torch.tensor([False, False, True]))
    assert best.x[:, 0].tolist() == [2.0, 2.0, 1.0]
    assert best.loss.tolist() == [0.5, 9.0, 1.0] and best.success.tolist() == [False, True, False]
    # a successful best is not replaced by an unsuccessful iterate, however low its loss
    best.update(rows, torch.full((3, 1), 3.0), torch.tensor([0.1, -5.0, 0.1]), no, torch.ones(3, dtype=torch.bool), no)
    assert best.x[1, 0] == 2.0 and bool(best.success[1])


def test_active_set_compaction_policy():
    on_cpu = ActiveSet(torch.arange(4))
    keep = on_cpu.stop(torch.tensor([True, False, False, False]))
    assert keep is not None and on_cpu.index.tolist() == [1, 2, 3] and on_cpu.running() == 3
    carried = ActiveSet(torch.arange(4))
    carried.compact_below = 0.5  # the GPU rule: carry stopped rows until at most half still run
    assert carried.stop(torch.tensor([True, False, False, False])) is None and carried.running() == 3
    assert carried.stop(torch.tensor([False, True, False, False])) is not None and carried.index.tolist() == [2, 3]


def test_prepare_freezes_and_restores_and_its_exact_pass_is_float32():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model.eval()
    x = torch.rand(2, 3, 8, 8)
    with prepare(model, x, Speed(channels_last=True, fold_bn=True), hooks=False) as net:
        assert not any(p.requires_grad for p in model.parameters())
        assert net.net is not model  # the BatchNorm-folded private copy
        with torch.no_grad():
            assert torch.allclose(net.forward(x), model(x), atol=1e-5)
            assert net.exact(x).dtype == torch.float32 and torch.allclose(net.exact(x), model(x), atol=1e-5)
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())


class Threshold(nn.Module):
    """Two logits, [100·(mean pixel − τ), 0]: class 0 wins exactly when the mean pixel exceeds τ."""

    def __init__(self, tau: float):
        super().__init__()
        self.tau = tau

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([100 * (m - self.tau), torch.zeros_like(m)], 1)


def test_early_stop_stops_only_on_a_success_that_survives_8bit_rounding():
    """The float iterate crosses the boundary at 127.42/255, which rounds back to 127/255 (not successful);
    the engine must go on until the 8-bit image succeeds (128/255)."""
    model = Threshold(tau=127.4 / 255)
    x0 = torch.full((1, 1, 2, 2), 127 / 255)
    threat = Linf(4 / 255)
    kw = dict(threat=threat, steps=30, step_size=0.14 / 255, criterion=Targeted([0]), early_stop=True,
              progress=False)
    floating = optimize(model, x0, NegLogProb(torch.tensor([0])), **kw)
    assert bool(floating.success[0]) and float(floating.x.mean()) * 255 < 127.5  # a float success...
    assert model(EightBit(threat)(floating.x, x0)).argmax(1).item() == 1  # ...that rounding undoes
    saved = optimize(model, x0, NegLogProb(torch.tensor([0])), output=EightBit(threat), **kw)
    assert bool(saved.success[0])
    assert torch.equal(saved.x * 255, torch.round(saved.x * 255)) and bool(threat.contains(saved.x, x0).all())
    assert model(saved.x).argmax(1).item() == 0  # what is returned is what succeeds
    assert saved.example_steps > floating.example_steps  # it went on after the float success


def test_without_early_stop_every_flag_is_the_verdict_on_the_returned_image():
    model = Threshold(tau=127.4 / 255)
    x0 = torch.rand(6, 1, 2, 2, generator=torch.Generator().manual_seed(0)) * 0.02 + 126.5 / 255
    x0 = torch.round(x0 * 255) / 255
    threat = Linf(1 / 255)
    res = optimize(model, x0, NegLogProb(torch.zeros(6, dtype=torch.long)), threat=threat, steps=8,
                   step_size=0.3 / 255, criterion=Targeted(torch.zeros(6, dtype=torch.long)),
                   output=EightBit(threat), progress=False)
    assert torch.equal(res.x * 255, torch.round(res.x * 255))
    assert torch.equal(res.success, model(res.x).argmax(1) == 0)


def test_l2_returned_images_are_in_the_ball():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    x0 = torch.round(torch.rand(4, 3, 4, 4) * 255) / 255
    threat = L2(0.3)
    res = optimize(model, x0, NegLogProb(torch.arange(4)), threat=threat, steps=5, step_size=0.1,
                   criterion=Targeted(torch.arange(4)), early_stop=True, output=EightBit(threat), progress=False)
    assert bool(threat.contains(res.x, x0).all()) and torch.equal(res.x * 255, torch.round(res.x * 255))
    assert not math.isnan(float(res.loss.sum()))


def test_a_provisional_best_that_fails_gives_way_to_the_earlier_exact_success():
    x0 = torch.zeros(2, 1)
    best = BestIterates(x0)
    rows, no = torch.arange(2), torch.zeros(2, dtype=torch.bool)
    yes = torch.ones(2, dtype=torch.bool)
    best.update(rows, torch.ones(2, 1), torch.tensor([1.0, 1.0]), yes, yes, no)  # exact successes
    best.keep_fallback(rows)
    best.update(rows, torch.full((2, 1), 2.0), torch.tensor([0.5, 0.5]), yes, no, no)  # provisional, lower loss
    assert best.x[:, 0].tolist() == [2.0, 2.0] and not bool(best.exact.any())
    best.replace(rows, torch.full((2, 1), 2.0), torch.tensor([0.5, 0.7]), torch.tensor([True, False]))
    best.restore_fallback(rows[~best.success[rows]])
    assert best.x[:, 0].tolist() == [2.0, 1.0] and best.loss.tolist() == [0.5, 1.0]
    assert bool(best.success.all()) and bool(best.exact.all())
