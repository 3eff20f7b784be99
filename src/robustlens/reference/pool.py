"""Pooling layers, NumPy only: max and average pooling (1-D, 2-D) and global max/average pooling.

Layout: x (B, C, N) or (B, C, H, W); the output keeps B and C. For a window of taps t:

    max:  y[b, c, n] = max_t x[b, c, n·s + t·d − p]      (x = −∞ outside 0..N−1)
    avg:  y[b, c, n] = (1/D) Σ_t x[b, c, n·s + t − p]    (x = 0 outside; D = k, or the count of real
                                                          entries when ``count_include_pad=False``)

``stride=None`` means ``stride = kernel_size`` (torch's default), except with ``padding="same"``,
which means stride 1 and ``p = d(k−1)/2`` (odd ``k``), so that the output has the input's size.
Every window must hold at least one real entry, else ``ValueError``. Without dilation, padding ≤ k/2
(torch's rule) ensures it; 'same' padding ensures it too, even with dilation (the centre tap is real),
though torch refuses p > k/2 there. torch returns −∞ for an all-padding window; we refuse it.

Tie rule (max pooling): the whole gradient of a window goes to the FIRST maximum in row-major
window order among real (non-padding) entries; torch's CPU kernels use the same rule.
Inputs are assumed free of NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustlens.reference.sliding import (
    add_taps,
    crop_spatial,
    pad_spatial,
    window_view,
)
from robustlens.reference.validation import (
    ShapeError,
    as_float_array,
    check_grad_shape,
    check_ndim,
    int_tuple,
    output_shape,
    same_padding,
)

__all__ = [
    "PoolCache", "maxpool_forward", "maxpool_backward", "avgpool_forward", "avgpool_backward",
    "maxpool1d_forward", "maxpool1d_backward", "maxpool2d_forward", "maxpool2d_backward",
    "avgpool1d_forward", "avgpool1d_backward", "avgpool2d_forward", "avgpool2d_backward",
    "global_max_pool_forward", "global_max_pool_backward", "global_avg_pool_forward", "global_avg_pool_backward",
]

_LAYOUT = {1: "(B, C, N)", 2: "(B, C, H, W)"}


@dataclass
class PoolCache:
    """Geometry of a pooling call plus, for max pooling, the winning tap of every window."""

    op: str
    x_shape: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    out: tuple[int, ...]
    argmax: np.ndarray | None = None  # (B, C, *out) flat tap index (row-major) of the chosen maximum
    divisor: np.ndarray | float | None = None  # avg pooling: D per output position
    dtype: np.dtype = np.dtype(np.float64)

    @property
    def y_shape(self) -> tuple[int, ...]:
        return tuple(self.x_shape[:2]) + self.out


def _resolve(x, kernel_size, stride, padding, dilation, nd: int, op: str):
    x = as_float_array(x, "x", op)
    check_ndim(x, nd + 2, "x", op, _LAYOUT[nd])
    if min(x.shape) < 1:
        raise ShapeError(f"{op}: empty axis in x.shape={x.shape}")
    kernel = int_tuple(kernel_size, nd, "kernel_size", op, minimum=1)
    dilation_t = int_tuple(dilation, nd, "dilation", op, minimum=1)
    note = f"x.shape={x.shape}, kernel_size={kernel}"
    same = isinstance(padding, str)
    if same and padding != "same":
        raise ShapeError(f"{op}: padding must be 'same' or non-negative int(s), got {padding!r}")
    if stride is None:
        stride = 1 if same else kernel
    stride_t = int_tuple(stride, nd, "stride", op, minimum=1)
    if same:
        padding_t = same_padding(kernel, dilation_t, stride_t, op, note)
    else:
        padding_t = int_tuple(padding, nd, "padding", op, minimum=0)
    out = output_shape(x.shape[2:], kernel, stride_t, padding_t, dilation_t, op, note)
    valid = _valid_windows(x.shape[2:], kernel, stride_t, padding_t, dilation_t)
    if not valid.reshape(out + (-1,)).any(axis=-1).all():
        raise ShapeError(
            f"{op}: with padding={padding_t}, stride={stride_t} and dilation={dilation_t} some windows hold only "
            f"padding ({note}); use less padding or dilation (without dilation, padding ≤ kernel_size/2 always works)"
        )
    return x, kernel, stride_t, padding_t, dilation_t, out, valid


def _valid_windows(spatial, kernel, stride, padding, dilation) -> np.ndarray:
    """(*out, *kernel) bool: whether each tap of each window falls on a real (non-padding) entry."""
    mask = pad_spatial(np.ones(spatial, dtype=bool), padding, False)
    return window_view(mask, kernel, stride, dilation)


def maxpool_forward(x, kernel_size, *, stride=None, padding=0, dilation=1, nd: int = 2):
    """``nd``-D max pooling with −∞ padding; returns ``(y, cache)``."""
    op = f"maxpool{nd}d"
    x, kernel, stride_t, padding_t, dilation_t, out, valid = _resolve(x, kernel_size, stride, padding, dilation, nd, op)
    B, C = x.shape[:2]
    K = int(np.prod(kernel))
    win = window_view(pad_spatial(x, padding_t, -np.inf), kernel, stride_t, dilation_t)
    flat = win.reshape((B, C) + out + (K,))
    y = flat.max(axis=-1)
    valid = valid.reshape(out + (K,))
    # first maximum (row-major tap order) among real entries; padding never receives gradient
    argmax = np.argmax((flat == y[..., None]) & valid, axis=-1)
    cache = PoolCache(op, x.shape, kernel, stride_t, padding_t, dilation_t, out, argmax=argmax, dtype=x.dtype)
    return y, cache


def maxpool_backward(dy, cache: PoolCache):
    """``dx`` (the input's shape): each ``dy`` entry is routed to its window's chosen maximum."""
    dy = as_float_array(dy, "dy", cache.op)
    check_grad_shape(dy, cache.y_shape, cache.op)
    nd = len(cache.kernel)
    B, C = cache.x_shape[:2]
    padded = tuple(n + 2 * p for n, p in zip(cache.x_shape[2:], cache.padding))
    if cache.argmax is None:
        raise ValueError(f"{cache.op}: the cache holds no argmax (not a max-pooling cache)")
    taps = np.unravel_index(cache.argmax, cache.kernel)
    pos = []
    for i in range(nd):
        o = np.arange(cache.out[i]).reshape((1, 1) + tuple(-1 if j == i else 1 for j in range(nd)))
        pos.append(o * cache.stride[i] + taps[i] * cache.dilation[i])
    flat = np.ravel_multi_index(tuple(pos), padded)
    plane = np.arange(B * C).reshape((B, C) + (1,) * nd) * int(np.prod(padded))
    dxp = np.bincount((plane + flat).ravel(), weights=dy.ravel(), minlength=B * C * int(np.prod(padded)))
    dxp = dxp.astype(np.result_type(dy, cache.dtype), copy=False).reshape((B, C) + padded)
    return np.ascontiguousarray(crop_spatial(dxp, cache.padding))


def avgpool_forward(x, kernel_size, *, stride=None, padding=0, count_include_pad=True, nd: int = 2):
    """``nd``-D average pooling with zero padding; returns ``(y, cache)``.

    ``count_include_pad=True`` (torch's default) divides by k (k·k in 2-D); ``False`` divides by the
    number of real entries in the window.
    """
    op = f"avgpool{nd}d"
    x, kernel, stride_t, padding_t, dilation_t, out, valid = _resolve(x, kernel_size, stride, padding, 1, nd, op)
    win = window_view(pad_spatial(x, padding_t, 0.0), kernel, stride_t, dilation_t)
    taps_axes = tuple(range(2 + nd, 2 + 2 * nd))
    if count_include_pad:
        divisor = float(np.prod(kernel))
    else:
        divisor = valid.sum(axis=tuple(range(nd, 2 * nd))).astype(x.dtype)
    y = win.sum(axis=taps_axes) / divisor
    cache = PoolCache(op, x.shape, kernel, stride_t, padding_t, dilation_t, out, divisor=divisor, dtype=x.dtype)
    return y, cache


def avgpool_backward(dy, cache: PoolCache):
    """``dx``: every tap of a window receives ``dy / D``."""
    dy = as_float_array(dy, "dy", cache.op)
    check_grad_shape(dy, cache.y_shape, cache.op)
    g = dy / cache.divisor
    padded = tuple(cache.x_shape[:2]) + tuple(n + 2 * p for n, p in zip(cache.x_shape[2:], cache.padding))
    dxp = np.zeros(padded, dtype=np.result_type(dy, cache.dtype))
    add_taps(dxp, lambda t: g, cache.kernel, cache.out, cache.stride, cache.dilation)
    return np.ascontiguousarray(crop_spatial(dxp, cache.padding))


def maxpool1d_forward(x, kernel_size, *, stride=None, padding=0, dilation=1):
    """x (B, C, N) → (y (B, C, N_out), cache)."""
    return maxpool_forward(x, kernel_size, stride=stride, padding=padding, dilation=dilation, nd=1)


def maxpool2d_forward(x, kernel_size, *, stride=None, padding=0, dilation=1):
    """x (B, C, H, W) → (y (B, C, H_out, W_out), cache)."""
    return maxpool_forward(x, kernel_size, stride=stride, padding=padding, dilation=dilation, nd=2)


def avgpool1d_forward(x, kernel_size, *, stride=None, padding=0, count_include_pad=True):
    """x (B, C, N) → (y (B, C, N_out), cache)."""
    return avgpool_forward(x, kernel_size, stride=stride, padding=padding, count_include_pad=count_include_pad, nd=1)


def avgpool2d_forward(x, kernel_size, *, stride=None, padding=0, count_include_pad=True):
    """x (B, C, H, W) → (y (B, C, H_out, W_out), cache)."""
    return avgpool_forward(x, kernel_size, stride=stride, padding=padding, count_include_pad=count_include_pad, nd=2)


maxpool1d_backward = maxpool2d_backward = maxpool_backward
avgpool1d_backward = avgpool2d_backward = avgpool_backward


@dataclass
class GlobalPoolCache:
    op: str
    x_shape: tuple[int, ...]
    argmax: np.ndarray | None = None  # (B, C) flat spatial index (row-major) of the first maximum
    dtype: np.dtype = np.dtype(np.float64)


def _check_global(x, op: str) -> np.ndarray:
    x = as_float_array(x, "x", op)
    if x.ndim < 3 or min(x.shape) < 1:
        raise ShapeError(f"{op}: x must be (B, C, *spatial) with at least one non-empty spatial axis, got x.shape={x.shape}")
    return x


def global_max_pool_forward(x):
    """x (B, C, *spatial) → (y (B, C) = max over all spatial positions, cache). Ties: first in row-major order."""
    x = _check_global(x, "global_max_pool")
    flat = x.reshape(x.shape[:2] + (-1,))
    argmax = np.argmax(flat, axis=-1)
    y = np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]
    return y, GlobalPoolCache("global_max_pool", x.shape, argmax, x.dtype)


def global_max_pool_backward(dy, cache: GlobalPoolCache):
    """dy (B, C) → dx (B, C, *spatial), non-zero only at each channel's chosen maximum."""
    dy = as_float_array(dy, "dy", cache.op)
    check_grad_shape(dy, cache.x_shape[:2], cache.op)
    dx = np.zeros(cache.x_shape[:2] + (int(np.prod(cache.x_shape[2:])),), dtype=np.result_type(dy, cache.dtype))
    if cache.argmax is None:
        raise ValueError(f"{cache.op}: the cache holds no argmax (not a max-pooling cache)")
    np.put_along_axis(dx, cache.argmax[..., None], dy[..., None], axis=-1)
    return dx.reshape(cache.x_shape)


def global_avg_pool_forward(x):
    """x (B, C, *spatial) → (y (B, C) = mean over all spatial positions, cache)."""
    x = _check_global(x, "global_avg_pool")
    y = x.reshape(x.shape[:2] + (-1,)).mean(axis=-1)
    return y, GlobalPoolCache("global_avg_pool", x.shape, None, x.dtype)


def global_avg_pool_backward(dy, cache: GlobalPoolCache):
    """dy (B, C) → dx (B, C, *spatial) = dy / (number of spatial positions), broadcast."""
    dy = as_float_array(dy, "dy", cache.op)
    check_grad_shape(dy, cache.x_shape[:2], cache.op)
    size = int(np.prod(cache.x_shape[2:]))
    g = (dy / size).astype(np.result_type(dy, cache.dtype), copy=False)
    return np.ascontiguousarray(np.broadcast_to(g.reshape(g.shape + (1,) * (len(cache.x_shape) - 2)), cache.x_shape))
