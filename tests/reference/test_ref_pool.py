"""Pooling: vs torch (≤ 1e-10), vs finite differences (≤ 1e-6) away from ties, and the tie rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from ref_helpers import (
    assert_matches_fd,
    assert_matches_torch,
    brute_maxpool,
    distinct_values,
    every_window_has_real_entry,
    resolved_pool_geometry,
    torch_accepts_pool,
    torch_check_or_skip,
)

from robustlens.reference import pool
from robustlens.reference.gradcheck import numpy_pass

SETTINGS = settings(max_examples=50, deadline=None)


@st.composite
def pool_cases(draw, nd: int, dilation: bool = True):
    """(x_shape, kwargs, seed) for a valid nd-D pooling: 'same' (odd k, stride 1) or general geometry."""
    B, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    pick = (lambda v: tuple(v)) if nd == 2 else (lambda v: v[0])
    if draw(st.booleans()):
        kernel = [draw(st.sampled_from([1, 3, 5])) for _ in range(nd)]
        dil = [draw(st.integers(1, 2)) if dilation else 1 for _ in range(nd)]
        spatial = [draw(st.integers(1, 9 if nd == 1 else 6)) for _ in range(nd)]
        kwargs = {"kernel_size": pick(kernel), "padding": "same"}
        if dilation:
            kwargs["dilation"] = pick(dil)
    else:
        kernel, stride, padding, dil, spatial = [], [], [], [], []
        for _ in range(nd):
            k = draw(st.integers(1, 4))
            p = draw(st.integers(0, k // 2))
            d = draw(st.integers(1, 2)) if dilation else 1
            n_min = max(1, d * (k - 1) + 1 - 2 * p)
            kernel.append(k), padding.append(p), dil.append(d), stride.append(draw(st.integers(1, 3)))
            spatial.append(draw(st.integers(n_min, n_min + (8 if nd == 1 else 4))))
        kwargs = {"kernel_size": pick(kernel), "padding": pick(padding)}
        if draw(st.booleans()):
            kwargs["stride"] = pick(stride)  # otherwise stride defaults to the kernel size
        if dilation:
            kwargs["dilation"] = pick(dil)
        # with dilation some geometries leave a window entirely in the padding (rejected: see
        # test_pooling_rejects_all_padding_windows)
        assume(every_window_has_real_entry(spatial, *resolved_pool_geometry(nd, kwargs)))
    return (B, C, *spatial), kwargs, draw(st.integers(0, 2**32 - 1))


# ---- max pooling -------------------------------------------------------------------------------

@SETTINGS
@given(st.sampled_from([1, 2]), st.booleans(), st.data())
def test_maxpool_matches_oracle_torch_and_fd(nd, negative_only, data):
    """Distinct values (optionally all negative): same output and gradient as the loop oracle, as
    torch (where torch accepts the padding) and as finite differences."""
    x_shape, kwargs, seed = data.draw(pool_cases(nd))
    rng = np.random.default_rng(seed)
    x = distinct_values(x_shape, rng, negative_only=negative_only)
    ours = numpy_pass(f"maxpool{nd}d", x, None, None, kwargs, rng=rng)
    y_ref, dx_ref = brute_maxpool(x, *resolved_pool_geometry(nd, kwargs), ours["dy"])
    np.testing.assert_array_equal(ours["y"], y_ref)
    np.testing.assert_allclose(ours["dx"], dx_ref, rtol=0, atol=1e-12)
    if kwargs.get("padding") == "same":
        assert ours["y"].shape == x.shape
    if torch_accepts_pool(nd, kwargs):
        assert_matches_torch(f"maxpool{nd}d", x, None, None, kwargs, rng)
    assert_matches_fd(f"maxpool{nd}d", x, None, None, kwargs, rng)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 2]), st.data())
def test_maxpool_ties_follow_first_maximum_rule(nd, data):
    """Integer inputs in {−2, −1, 0} tie everywhere: the gradient of each window must go to the first
    maximum in row-major order among real entries (brute-force oracle), and torch's CPU kernel agrees."""
    x_shape, kwargs, seed = data.draw(pool_cases(nd))
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 1, size=x_shape).astype(np.float64)
    ours = numpy_pass(f"maxpool{nd}d", x, None, None, kwargs, rng=rng)
    y_ref, dx_ref = brute_maxpool(x, *resolved_pool_geometry(nd, kwargs), ours["dy"])
    np.testing.assert_array_equal(ours["y"], y_ref)
    np.testing.assert_allclose(ours["dx"], dx_ref, rtol=0, atol=1e-12)
    if torch_accepts_pool(nd, kwargs):  # torch's CPU rule is the same first-maximum rule
        assert_matches_torch(f"maxpool{nd}d", x, None, None, kwargs, rng)


def test_maxpool_tie_rule_by_hand():
    """x = [1, 3, 3, 2, 3], k = 3, 'same': windows [−∞,1,3] [1,3,3] [3,3,2] [3,2,3] [2,3,−∞].
    First maxima: index 1, 1, 1, 2, 4 → dx = [0, 3, 1, 0, 1] for dy = 1."""
    y, cache = pool.maxpool1d_forward(np.array([[[1.0, 3.0, 3.0, 2.0, 3.0]]]), 3, padding="same")
    np.testing.assert_array_equal(y, [[[3.0] * 5]])
    np.testing.assert_array_equal(pool.maxpool_backward(np.ones_like(y), cache), [[[0.0, 3.0, 1.0, 0.0, 1.0]]])
    # 2-D: all four equal → the top-left entry of each window wins (row-major order)
    y, cache = pool.maxpool2d_forward(np.zeros((1, 1, 2, 2)), 2)
    np.testing.assert_array_equal(pool.maxpool_backward(np.ones_like(y), cache), [[[[1.0, 0.0], [0.0, 0.0]]]])


def test_maxpool_pads_with_minus_infinity():
    """With zero padding the border outputs of an all-negative signal would be 0; −∞ padding keeps the
    true window maximum and sends no gradient into the padding."""
    x = np.array([[[-5.0, -1.0, -3.0, -4.0]]])
    y, cache = pool.maxpool1d_forward(x, 3, padding="same")
    np.testing.assert_array_equal(y, [[[-1.0, -1.0, -1.0, -3.0]]])
    dx = pool.maxpool_backward(np.ones_like(y), cache)
    np.testing.assert_array_equal(dx, [[[0.0, 3.0, 1.0, 0.0]]])
    assert dx.sum() == y.size  # every output's gradient landed on a real entry


def test_maxpool_minus_infinity_input_routes_to_real_entry():
    """A window whose real entries are all −∞ ties with the padding: the gradient still goes to the
    first real entry (as in torch), never into the padding."""
    x = np.array([[[-np.inf, -np.inf, 2.0]]])
    y, cache = pool.maxpool1d_forward(x, 3, padding="same")
    np.testing.assert_array_equal(y, [[[-np.inf, 2.0, 2.0]]])
    np.testing.assert_array_equal(pool.maxpool_backward(np.ones_like(y), cache), [[[1.0, 0.0, 2.0]]])
    tc = torch_check_or_skip()
    ref = tc.torch_pass("maxpool1d", x, None, None, {"kernel_size": 3, "padding": "same"}, np.ones((1, 1, 3)))
    np.testing.assert_array_equal(ref["dx"], [[[1.0, 0.0, 2.0]]])


@pytest.mark.parametrize("n, k", [(6, 1), (5, 5), (3, 5), (1, 3)], ids=["k=1", "k=N", "N<k", "N=1"])
def test_maxpool_same_edge_sizes(n, k):
    rng = np.random.default_rng(n + 7 * k)
    x = distinct_values((2, 2, n), rng, negative_only=True)
    y, _ = pool.maxpool1d_forward(x, k, padding="same")
    assert y.shape == x.shape
    kwargs = {"kernel_size": k, "padding": "same"}
    assert_matches_fd("maxpool1d", x, None, None, kwargs, rng)
    assert_matches_torch("maxpool1d", x, None, None, kwargs, rng)
    x2 = distinct_values((1, 2, n, n + 1), rng)
    assert pool.maxpool2d_forward(x2, k, padding="same")[0].shape == x2.shape
    assert_matches_torch("maxpool2d", x2, None, None, kwargs, rng)


def test_pooling_rejects_all_padding_windows():
    """k = 2, d = 2, p = 1 on a length-1 signal: the only window reads positions −1 and 1, both padding."""
    with pytest.raises(ValueError, match=r"maxpool1d: .*some windows hold only padding \(x\.shape=\(1, 1, 1\)"):
        pool.maxpool1d_forward(np.ones((1, 1, 1)), 2, stride=2, padding=1, dilation=2)
    with pytest.raises(ValueError, match=r"avgpool1d: .*some windows hold only padding"):
        pool.avgpool1d_forward(np.ones((1, 1, 3)), 1, padding=1)  # p > k/2: the first window is padding


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.integers(1, 5), st.integers(1, 3), st.integers(0, 4), st.integers(1, 3))
def test_all_padding_check_agrees_with_brute_force(n, k, s, p, d):
    """Exactly the geometries with a window made only of padding are rejected."""
    if (n + 2 * p - d * (k - 1) - 1) // s + 1 < 1:
        return  # too short for any output: a different error
    ok = every_window_has_real_entry((n,), (k,), (s,), (p,), (d,))
    try:
        pool.maxpool1d_forward(np.ones((1, 1, n)), k, stride=s, padding=p, dilation=d)
        assert ok
    except ValueError as e:
        assert not ok and "only padding" in str(e)


# ---- average pooling ---------------------------------------------------------------------------

@SETTINGS
@given(st.sampled_from([1, 2]), st.booleans(), st.data())
def test_avgpool_matches_torch_and_fd(nd, count_include_pad, data):
    x_shape, kwargs, seed = data.draw(pool_cases(nd, dilation=False))
    kwargs = dict(kwargs, count_include_pad=count_include_pad)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    assert_matches_torch(f"avgpool{nd}d", x, None, None, kwargs, rng)
    assert_matches_fd(f"avgpool{nd}d", x, None, None, kwargs, rng)


def test_avgpool_same_by_hand():
    x = np.array([[[3.0, 6.0, 9.0]]])
    y, _ = pool.avgpool1d_forward(x, 3, padding="same")
    np.testing.assert_allclose(y, [[[3.0, 6.0, 5.0]]])  # zeros counted: (0+3+6)/3, (3+6+9)/3, (6+9+0)/3
    y, _ = pool.avgpool1d_forward(x, 3, padding="same", count_include_pad=False)
    np.testing.assert_allclose(y, [[[4.5, 6.0, 7.5]]])


# ---- global pooling ----------------------------------------------------------------------------

@SETTINGS
@given(st.integers(1, 2), st.integers(1, 3), st.lists(st.integers(1, 5), min_size=1, max_size=2),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_global_pools_match_torch_and_fd(B, C, spatial, ties, seed):
    rng = np.random.default_rng(seed)
    shape = (B, C, *spatial)
    x = rng.integers(-2, 1, size=shape).astype(np.float64) if ties else distinct_values(shape, rng)
    assert_matches_torch("global_max_pool", x, None, None, {}, rng)
    assert_matches_torch("global_avg_pool", x, None, None, {}, rng)
    assert_matches_fd("global_avg_pool", x, None, None, {}, rng)
    if not ties:
        assert_matches_fd("global_max_pool", x, None, None, {}, rng)
    else:  # tie rule: the first maximum in row-major order receives the whole gradient
        ours = numpy_pass("global_max_pool", x, None, None, {}, rng=rng)
        flat = x.reshape(B, C, -1)
        first = (flat == flat.max(axis=-1, keepdims=True)).argmax(axis=-1)
        expected = np.zeros_like(flat)
        for b in range(B):
            for c in range(C):
                expected[b, c, first[b, c]] = ours["dy"][b, c]
        np.testing.assert_array_equal(ours["dx"], expected.reshape(shape))


def test_global_pools_by_hand():
    x = np.array([[[[1.0, 4.0], [4.0, -1.0]]]])
    y, cache = pool.global_max_pool_forward(x)
    assert y.shape == (1, 1) and y[0, 0] == 4.0
    np.testing.assert_array_equal(pool.global_max_pool_backward(np.array([[2.0]]), cache), [[[[0, 2.0], [0, 0]]]])
    y, cache = pool.global_avg_pool_forward(x)
    assert y[0, 0] == 2.0
    np.testing.assert_array_equal(pool.global_avg_pool_backward(np.array([[2.0]]), cache), np.full((1, 1, 2, 2), 0.5))
