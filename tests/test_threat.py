"""Threat models: projections are exact and feasible, random starts are feasible, directions have unit norm,
and PGD never leaves [0,1] ∩ ε-ball (Hypothesis, tiny random conv model)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustlens.optim.threat import L1, L2, Linf, Unconstrained, make_threat
from robustlens.recipes.attacks import fgsm, pgd

TOL = 1e-6
FAST = settings(max_examples=40, deadline=None)
EPS_RANGE = {"linf": (0.0, 0.5), "l2": (0.0, 4.0), "l1": (0.0, 30.0)}


def images(seed: int, n: int, size: int = 6, saturate: bool = True) -> torch.Tensor:
    """(n,3,size,size) in [0,1]; with ``saturate`` about a quarter of the values sit exactly at 0 or 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    return (x * 1.5 - 0.25).clamp(0, 1) if saturate else x


def tiny_model(seed: int = 0, classes: int = 5) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                      nn.Linear(16, classes))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return m.eval()


norms = st.sampled_from(["linf", "l2", "l1"])


@st.composite
def norm_and_eps(draw):
    norm = draw(norms)
    lo, hi = EPS_RANGE[norm]
    return norm, draw(st.one_of(st.just(0.0), st.floats(lo, hi, allow_nan=False)))


def assert_feasible(threat, x, x0):
    assert x.shape == x0.shape
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float((threat.norm(x - x0) - threat.eps).max()) <= TOL


@FAST
@given(norm_and_eps(), st.integers(0, 10_000), st.integers(1, 4), st.floats(0.0, 3.0))
def test_projection_is_feasible_and_idempotent(ne, seed, n, spread):
    norm, eps = ne
    threat = make_threat(norm, eps)
    x0 = images(seed, n)
    z = x0 + spread * torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 1))
    p = threat.project(z, x0)
    assert_feasible(threat, p, x0)
    assert torch.allclose(threat.project(p, x0), p, atol=1e-5)
    if bool(threat.contains(z, x0, tol=0).all()):  # already feasible: unchanged
        assert torch.allclose(p, z, atol=1e-6)


@FAST
@given(st.sampled_from(["l2", "l1"]), st.integers(0, 10_000), st.floats(0.05, 1.0))
def test_projection_is_the_nearest_point(norm, seed, frac):
    """Variational inequality of the Euclidean projection p of z onto a convex set C:
    <z − p, y − p> ≤ 0 for every y in C (checked for random feasible y, and x0)."""
    x0 = images(seed, 2)
    d = x0[0].numel()
    eps = frac * (math.sqrt(d) * 0.3 if norm == "l2" else d * 0.1)
    threat = make_threat(norm, eps)
    g = torch.Generator().manual_seed(seed + 7)
    z = x0 + 0.8 * torch.randn(x0.shape, generator=g)
    p = threat.project(z, x0).double()
    for y in [x0] + [threat.random_start(x0, g) for _ in range(5)]:
        inner = ((z.double() - p) * (y.double() - p)).flatten(1).sum(1)
        assert float(inner.max()) <= 1e-4 * max(1.0, float((z.double() - p).norm()))


def _l2_bisection64(z: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
    """An independent reference in float64: bisection on t for x(t) = clip(x0 + t(z − x0)), 80 halvings."""
    z, x0 = z.double(), x0.double()
    d = z - x0
    lo, hi = torch.zeros(len(z), dtype=torch.float64), torch.ones(len(z), dtype=torch.float64)
    for _ in range(80):
        mid = (lo + hi) / 2
        ok = ((x0 + mid.view(-1, 1, 1, 1) * d).clamp(0, 1) - x0).flatten(1).norm(dim=1) <= eps
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    return (x0 + lo.view(-1, 1, 1, 1) * d).clamp(0, 1)


@FAST
@given(st.integers(0, 10_000), st.integers(1, 5), st.sampled_from([4, 16, 40]), st.floats(0.05, 3.0),
       st.floats(0.01, 0.9))
def test_l2_projection_matches_a_float64_bisection(seed, n, size, spread, frac):
    """The active-set solution is the projection a float64 bisection finds (to float32 rounding), on images
    with many saturated pixels and so many clip points; it is feasible and the ball constraint is active."""
    x0 = images(seed, n, size)
    eps = frac * math.sqrt(x0[0].numel()) * 0.3
    z = x0 + spread * torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 3))
    threat = L2(eps)
    p = threat.project(z, x0)
    ref = _l2_bisection64(z, x0, eps)
    assert_feasible(threat, p, x0)
    assert float((p.double() - ref).abs().max()) <= 2e-5
    clipped_outside = threat.norm((z.clamp(0, 1) - x0)) > eps
    active = threat.norm(p - x0)[clipped_outside]
    assert bool((active >= eps * (1 - 1e-5)).all())


def test_l2_projection_beats_project_then_clip():
    """The exact ball∩box projection is closer to z than the common ball-then-clip approximation."""
    x0 = torch.tensor([[0.95, 0.5, 0.05]]).view(1, 3, 1, 1)
    z = torch.tensor([[2.0, 1.0, -1.0]]).view(1, 3, 1, 1)
    threat = L2(0.5)
    exact = threat.project(z, x0)
    d = z - x0
    approx = (x0 + d * (0.5 / d.norm())).clamp(0, 1)
    assert threat.contains(exact, x0).all()
    assert float((exact - z).norm()) < float((approx - z).norm()) - 1e-3
    assert abs(float(threat.norm(exact - x0)) - 0.5) < 1e-5  # the ball constraint is active


@FAST
@given(norm_and_eps(), st.integers(0, 10_000), st.integers(1, 4))
def test_random_start_is_feasible(ne, seed, n):
    norm, eps = ne
    threat = make_threat(norm, eps)
    x0 = images(seed, n)
    x = threat.random_start(x0, torch.Generator().manual_seed(seed))
    assert_feasible(threat, x, x0)


def test_linf_random_start_is_uniform_on_the_box():
    x0 = torch.full((1, 1, 100, 100), 0.99)
    x = Linf(0.05).random_start(x0, torch.Generator().manual_seed(0))
    # the allowed interval is [0.94, 1.0]: uniform there, no pile-up at 1.0 (as clipping would give)
    assert float(x.min()) >= 0.94 and float(x.max()) <= 1.0
    assert float((x == 1.0).float().mean()) < 0.01
    assert abs(float(x.mean()) - 0.97) < 0.005


def test_random_start_uses_only_the_generator():
    x0 = images(0, 2)
    state = torch.random.get_rng_state()
    a = L2(1.0).random_start(x0, torch.Generator().manual_seed(3))
    b = L2(1.0).random_start(x0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(state, torch.random.get_rng_state())


@FAST
@given(st.integers(0, 10_000))
def test_ascent_directions_have_unit_norm(seed):
    g = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(Linf(0.1).ascent_direction(g), g.sign())
    assert torch.allclose(L2(1.0).norm(L2(1.0).ascent_direction(g)), torch.ones(3))
    d1 = L1(1.0, sparsity=0.9).ascent_direction(g)
    assert torch.allclose(d1.flatten(1).abs().sum(1), torch.ones(3))
    assert int((d1[0] != 0).sum()) == round(0.1 * g[0].numel())
    assert float((d1 * g).sum()) > 0  # an ascent direction


def test_l1_direction_skips_entries_the_box_blocks():
    g = torch.tensor([[-5.0, 1.0, 0.5]]).view(1, 3, 1, 1)
    x = torch.tensor([[0.0, 0.5, 0.5]]).view(1, 3, 1, 1)  # the first entry cannot decrease
    d = L1(1.0, sparsity=0.5).ascent_direction(g, x)
    assert d.flatten().tolist() == [0.0, 0.5, 0.5]


def test_make_threat_checks_its_input():
    assert isinstance(make_threat("none", None), Unconstrained)
    assert isinstance(make_threat("Linf", 0.1), Linf)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        make_threat("l2", -0.1)
    with pytest.raises(ValueError, match="unknown norm"):
        make_threat("l3", 0.1)
    with pytest.raises(ValueError, match="needs eps"):
        make_threat("linf", None)


@settings(max_examples=25, deadline=None)
@given(norm_and_eps(), st.integers(0, 10_000), st.floats(1e-3, 1.0), st.integers(1, 4), st.booleans(),
       st.integers(1, 3), st.booleans(), st.booleans(), st.sampled_from(["ce", "cw"]))
def test_pgd_stays_in_the_ball_and_box(ne, seed, step_frac, steps, random_start, restarts, targeted, early_stop,
                                       loss):
    norm, eps = ne
    model = tiny_model(seed % 3)
    x = images(seed, 3)
    y = torch.tensor([0, 1, 2]) if targeted else model(x).argmax(1)
    adv = pgd(model, x, y, norm=norm, eps=eps, step_size=step_frac * max(eps, 1e-3), steps=steps,
              targeted=targeted, random_start=random_start, restarts=restarts, early_stop=early_stop,
              loss=loss, seed=seed)
    assert_feasible(make_threat(norm, eps), adv, x)
    assert not adv.requires_grad


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(["linf", "l2"]), st.integers(0, 10_000))
def test_fgsm_is_one_full_step(norm, seed):
    model = tiny_model()
    x = images(seed, 2, saturate=False) * 0.5 + 0.25  # interior: the box does not cut the step
    y = model(x).argmax(1)
    eps = 0.05
    adv = fgsm(model, x, y, norm=norm, eps=eps)
    assert_feasible(make_threat(norm, eps), adv, x)
    moved = make_threat(norm, eps).norm(adv - x)
    # the best iterate is x0 (if the step made things worse) or the full-size step
    assert all(abs(float(m) - eps) < 1e-5 or float(m) == 0.0 for m in moved)
