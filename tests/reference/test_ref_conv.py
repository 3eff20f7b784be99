"""Convolution: forward/backward vs torch (≤ 1e-10) and vs central finite differences (≤ 1e-6)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ref_helpers import assert_matches_fd, assert_matches_torch

from robustlens.reference.conv import conv1d_backward, conv1d_forward, conv2d_forward

SETTINGS = settings(max_examples=50, deadline=None)


@st.composite
def conv_cases(draw, nd: int):
    """(x_shape, w_shape, bias, kwargs, seed) for a valid nd-D convolution: 'same' or general geometry."""
    B = draw(st.integers(1, 2))
    c_in = draw(st.integers(1, 3))
    c_out = draw(st.integers(1, 3))
    same = draw(st.booleans())
    kernel, spatial, kwargs = [], [], {}
    if same:
        dil = [draw(st.integers(1, 2)) for _ in range(nd)]
        for i in range(nd):
            kernel.append(draw(st.sampled_from([1, 3, 5, 7] if nd == 1 else [1, 3, 5])))
            spatial.append(draw(st.integers(1, 10 if nd == 1 else 6)))  # N < k allowed: padding fills in
        kwargs = {"padding": "same", "dilation": tuple(dil) if nd == 2 else dil[0]}
    else:
        stride, padding, dil = [], [], []
        for i in range(nd):
            k = draw(st.integers(1, 6 if nd == 1 else 4))
            s, p, d = draw(st.integers(1, 3)), draw(st.integers(0, 3)), draw(st.integers(1, 3))
            n_min = max(1, d * (k - 1) + 1 - 2 * p)  # shortest input giving at least one output
            kernel.append(k)
            spatial.append(draw(st.integers(n_min, n_min + (8 if nd == 1 else 4))))
            stride.append(s), padding.append(p), dil.append(d)
        pick = (lambda v: tuple(v)) if nd == 2 else (lambda v: v[0])
        kwargs = {"stride": pick(stride), "padding": pick(padding), "dilation": pick(dil)}
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    return (B, c_in, *spatial), (c_out, c_in, *kernel), bias, kwargs, seed


def _inputs(x_shape, w_shape, bias, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(x_shape), rng.standard_normal(w_shape), (rng.standard_normal(w_shape[0]) if bias else None), rng


@SETTINGS
@given(conv_cases(1))
def test_conv1d_matches_torch(case):
    x_shape, w_shape, bias, kwargs, seed = case
    x, w, b, rng = _inputs(x_shape, w_shape, bias, seed)
    assert_matches_torch("conv1d", x, w, b, kwargs, rng)


@SETTINGS
@given(conv_cases(1))
def test_conv1d_matches_finite_differences(case):
    x_shape, w_shape, bias, kwargs, seed = case
    x, w, b, rng = _inputs(x_shape, w_shape, bias, seed)
    assert_matches_fd("conv1d", x, w, b, kwargs, rng)


@SETTINGS
@given(conv_cases(2))
def test_conv2d_matches_torch(case):
    x_shape, w_shape, bias, kwargs, seed = case
    x, w, b, rng = _inputs(x_shape, w_shape, bias, seed)
    assert_matches_torch("conv2d", x, w, b, kwargs, rng)


@settings(max_examples=25, deadline=None)
@given(conv_cases(2))
def test_conv2d_matches_finite_differences(case):
    x_shape, w_shape, bias, kwargs, seed = case
    x, w, b, rng = _inputs(x_shape, w_shape, bias, seed)
    assert_matches_fd("conv2d", x, w, b, kwargs, rng)


@pytest.mark.parametrize(
    "n, k",
    [(7, 1), (5, 5), (3, 5), (1, 7), (2, 3)],
    ids=["k=1", "k=N", "N<k", "N=1", "N<k small"],
)
def test_conv1d_same_edge_sizes(n, k):
    """'same' keeps the length for k = 1, k = N and N < k, and agrees with torch and finite differences."""
    x, w, b, rng = _inputs((2, 2, n), (3, 2, k), True, n * 10 + k)
    y, _ = conv1d_forward(x, w, b, padding="same")
    assert y.shape == (2, 3, n)
    assert_matches_fd("conv1d", x, w, b, {"padding": "same"}, rng)
    assert_matches_torch("conv1d", x, w, b, {"padding": "same"}, rng)


def test_conv1d_same_by_hand():
    """y[n] = Σ_j w[j]·x[n + j − p] with zeros outside, on a case small enough to do on paper."""
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    w = np.array([[[1.0, 0.0, -1.0]]])  # y[n] = x[n−1] − x[n+1]
    y, cache = conv1d_forward(x, w, padding="same")
    np.testing.assert_array_equal(y, [[[0 - 2.0, 1 - 3.0, 2 - 4.0, 3 - 0.0]]])
    dx, dw, db = conv1d_backward(np.ones_like(y), cache)
    # ∂C/∂x[m] = Σ_n dy[n] w[m − n + p] over real n: x[0] only feeds y[1] (+1), x[3] only y[2] (−1)
    np.testing.assert_array_equal(dx, [[[1.0, 0.0, 0.0, -1.0]]])
    # ∂C/∂w[j] = Σ_n dy[n] x[n + j − p]
    np.testing.assert_array_equal(dw, [[[1 + 2 + 3, 10.0, 2 + 3 + 4]]])
    assert db is None


def test_conv2d_same_keeps_size_and_is_cross_correlation():
    """A kernel with a single 1 at (0, 0) reads x[h − 1, w − 1]: cross-correlation, not flipped convolution."""
    x = np.arange(20.0).reshape(1, 1, 4, 5)
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 0, 0] = 1.0
    y, _ = conv2d_forward(x, w, padding="same")
    expected = np.zeros_like(x)
    expected[..., 1:, 1:] = x[..., :-1, :-1]
    np.testing.assert_array_equal(y, expected)


def test_float32_is_kept():
    x = np.ones((1, 1, 5), dtype=np.float32)
    w = np.ones((1, 1, 3), dtype=np.float32)
    y, cache = conv1d_forward(x, w)
    assert y.dtype == np.float32
    dx, dw, _ = conv1d_backward(np.ones_like(y), cache)
    assert dx.dtype == np.float32 and dw.dtype == np.float32
