"""Shared helpers for the reference-layer tests: input builders, a brute-force max-pool oracle."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from robustlens.reference.gradcheck import TOL_FD, TOL_TORCH, finite_difference_grads, numpy_pass, rel_err


def torch_check_or_skip():
    """The torch comparison module, or skip the test when torch is not installed."""
    pytest.importorskip("torch")
    from robustlens.reference import torch_check

    return torch_check


def distinct_values(shape, rng, spacing=0.05, negative_only=False):
    """Values at least ``spacing`` apart (no ties, so finite differences are valid at a max)."""
    size = int(np.prod(shape))
    base = rng.permutation(size).astype(np.float64)
    x = (base - (size + 1.0) if negative_only else base - size / 2 + 0.25) * spacing
    x += rng.uniform(-spacing / 5, spacing / 5, size)
    return x.reshape(shape)


def assert_matches_torch(layer, x, w, b, kwargs, rng):
    """Forward and all gradients within TOL_TORCH of torch; returns the largest relative error."""
    tc = torch_check_or_skip()
    ours = numpy_pass(layer, x, w, b, kwargs, rng=rng)
    ref = tc.torch_pass(layer, x, w, b, kwargs, ours["dy"])
    worst = 0.0
    for key in ("y", "dx", "dw", "db"):
        if ref[key] is None:
            assert ours[key] is None, key
            continue
        assert ours[key].shape == ref[key].shape, (key, ours[key].shape, ref[key].shape)
        err = rel_err(ours[key], ref[key])
        assert err <= TOL_TORCH, f"{layer} {key}: rel err {err:.3e} vs torch"
        worst = max(worst, err)
    return worst


def assert_matches_fd(layer, x, w, b, kwargs, rng):
    """All gradients within TOL_FD of central finite differences; returns the largest relative error."""
    ours = numpy_pass(layer, x, w, b, kwargs, rng=rng)
    fd = finite_difference_grads(layer, x, w, b, kwargs, ours["dy"])
    worst = 0.0
    for key in ("dx", "dw", "db"):
        if fd[key] is None:
            continue
        err = rel_err(ours[key], fd[key])
        assert err <= TOL_FD, f"{layer} {key}: rel err {err:.3e} vs finite differences"
        worst = max(worst, err)
    return worst


def brute_maxpool(x, kernel, stride, padding, dilation, dy):
    """Loop-by-loop max pooling: forward value and gradient routed to the FIRST maximum, in row-major
    tap order, among the real (non-padding) entries of each window. The documented tie rule, written
    independently of the vectorised code."""
    nd = len(kernel)
    spatial = x.shape[2:]
    out = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                for n, k, s, p, d in zip(spatial, kernel, stride, padding, dilation))
    y = np.empty(x.shape[:2] + out)
    dx = np.zeros_like(x)
    for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for o in itertools.product(*(range(n) for n in out)):
            best, best_pos = None, None
            for t in itertools.product(*(range(k) for k in kernel)):
                pos = tuple(o[i] * stride[i] + t[i] * dilation[i] - padding[i] for i in range(nd))
                if not all(0 <= pos[i] < spatial[i] for i in range(nd)):
                    continue
                v = x[(b, c) + pos]
                if best is None or v > best:
                    best, best_pos = v, pos
            y[(b, c) + o] = best
            dx[(b, c) + best_pos] += dy[(b, c) + o]
    return y, dx


def resolved_pool_geometry(nd, kwargs):
    """(kernel, stride, padding, dilation) tuples, resolved by hand from pooling keyword arguments."""
    tup = lambda v: tuple(v) if isinstance(v, tuple) else (v,) * nd  # noqa: E731
    k = tup(kwargs["kernel_size"])
    d = tup(kwargs.get("dilation", 1))
    if kwargs.get("padding") == "same":
        return k, (1,) * nd, tuple(di * (ki - 1) // 2 for ki, di in zip(k, d)), d
    return k, tup(kwargs.get("stride", k)), tup(kwargs.get("padding", 0)), d


def torch_accepts_pool(nd, kwargs):
    """torch's pooling refuses padding above half the kernel size (even with dilation)."""
    k, _, p, _ = resolved_pool_geometry(nd, kwargs)
    return all(2 * pi <= ki for ki, pi in zip(k, p))


def every_window_has_real_entry(spatial, kernel, stride, padding, dilation):
    """Brute force: does every pooling window touch at least one position inside the input?"""
    for n, k, s, p, d in zip(spatial, kernel, stride, padding, dilation):
        out = (n + 2 * p - d * (k - 1) - 1) // s + 1
        for o in range(out):
            if not any(0 <= o * s + t * d - p < n for t in range(k)):
                return False
    return True
