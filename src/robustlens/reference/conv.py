"""Convolution layers (cross-correlation, as deep-learning frameworks define it), NumPy only.

Layout follows torch: 1-D ``x`` (B, C_in, N), ``w`` (C_out, C_in, k), ``b`` (C_out,), ``y`` (B, C_out, N_out);
2-D ``x`` (B, C_in, H, W), ``w`` (C_out, C_in, kh, kw), ``y`` (B, C_out, H_out, W_out).

    y[b, o, n] = b[o] + Σ_c Σ_j w[o, c, j] · x[b, c, n·s + j·d − p]      (x = 0 outside 0..N−1)

``padding="same"`` means ``p = d(k−1)/2`` with stride 1, which needs an odd ``k`` and gives ``N_out = N``.
Each ``*_forward`` returns ``(y, cache)``; ``*_backward(dy, cache)`` returns ``(dx, dw, db)`` with
``db = None`` when the forward had no bias. Derivations: ``docs/derivations.md``.
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

__all__ = ["ConvCache", "conv1d_forward", "conv1d_backward", "conv2d_forward", "conv2d_backward",
           "conv_forward", "conv_backward"]

_LAYOUT = {1: ("(B, C_in, N)", "(C_out, C_in, k)"), 2: ("(B, C_in, H, W)", "(C_out, C_in, kh, kw)")}


@dataclass
class ConvCache:
    """What the backward pass needs: the padded input's windows, the weight and the geometry."""

    op: str
    x_shape: tuple[int, ...]
    windows: np.ndarray  # (B, C_in, *out, *kernel) view of the padded input
    w: np.ndarray
    has_bias: bool
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    out: tuple[int, ...]

    @property
    def y_shape(self) -> tuple[int, ...]:
        return (self.x_shape[0], self.w.shape[0]) + self.out


def resolve_conv_args(nd: int, x_shape, w_shape, stride, padding, dilation, op: str):
    """Validated ``(stride, padding, dilation, out)`` tuples for an ``nd``-D convolution."""
    note = f"x.shape={tuple(x_shape)}, w.shape={tuple(w_shape)}"
    kernel = tuple(w_shape[2:])
    stride_t = int_tuple(stride, nd, "stride", op, minimum=1)
    dilation_t = int_tuple(dilation, nd, "dilation", op, minimum=1)
    if isinstance(padding, str):
        if padding != "same":
            raise ShapeError(f"{op}: padding must be 'same' or non-negative int(s), got {padding!r}")
        padding_t = same_padding(kernel, dilation_t, stride_t, op, note)
    else:
        padding_t = int_tuple(padding, nd, "padding", op, minimum=0)
    out = output_shape(tuple(x_shape[2:]), kernel, stride_t, padding_t, dilation_t, op, note)
    return stride_t, padding_t, dilation_t, out


def conv_forward(x, w, b=None, *, stride=1, padding="same", dilation=1, nd: int | None = None):
    """``nd``-D convolution (nd = 1 or 2, default from ``w.ndim``); returns ``(y, cache)``."""
    x = np.asarray(x)
    w = np.asarray(w)
    nd = w.ndim - 2 if nd is None else nd
    if nd not in _LAYOUT:
        raise ShapeError(f"conv: only 1-D and 2-D convolutions are supported, got w.shape={w.shape}")
    op = f"conv{nd}d"
    x = as_float_array(x, "x", op)
    w = as_float_array(w, "w", op)
    x_layout, w_layout = _LAYOUT[nd]
    check_ndim(x, nd + 2, "x", op, x_layout)
    check_ndim(w, nd + 2, "w", op, w_layout)
    if x.shape[1] != w.shape[1]:
        raise ShapeError(
            f"{op}: input has {x.shape[1]} channels (x.shape={x.shape}) but weight expects {w.shape[1]} "
            f"(w.shape={w.shape})"
        )
    if min(w.shape) < 1 or min(x.shape) < 1:
        raise ShapeError(f"{op}: empty axis in x.shape={x.shape} or w.shape={w.shape}")
    if b is not None:
        b = as_float_array(b, "b", op)
        if b.shape != (w.shape[0],):
            raise ShapeError(f"{op}: bias must have shape ({w.shape[0]},) to match w.shape={w.shape}, got b.shape={b.shape}")
    stride_t, padding_t, dilation_t, out = resolve_conv_args(nd, x.shape, w.shape, stride, padding, dilation, op)
    kernel = tuple(w.shape[2:])

    win = window_view(pad_spatial(x, padding_t), kernel, stride_t, dilation_t)
    # contract C_in and the kernel taps: (B, *out, C_out) -> (B, C_out, *out)
    y = np.tensordot(win, w, axes=([1, *range(2 + nd, 2 + 2 * nd)], [1, *range(2, 2 + nd)]))
    y = np.ascontiguousarray(np.moveaxis(y, -1, 1))
    if b is not None:
        y += b.reshape((1, -1) + (1,) * nd)
    cache = ConvCache(op, x.shape, win, w, b is not None, stride_t, padding_t, dilation_t, out)
    return y, cache


def conv_backward(dy, cache: ConvCache):
    """``(dx, dw, db)`` from ``dy = ∂C/∂y`` for :func:`conv_forward`; ``db`` is ``None`` without a bias."""
    nd = len(cache.out)
    dy = as_float_array(dy, "dy", cache.op)
    check_grad_shape(dy, cache.y_shape, cache.op)
    sp = list(range(2, 2 + nd))
    # ∂C/∂w[o,c,t] = Σ_b Σ_n dy[b,o,n] · xp[b,c,n·s + t·d]
    dw = np.tensordot(dy, cache.windows, axes=([0, *sp], [0, *sp]))
    db = dy.sum(axis=(0, *sp)) if cache.has_bias else None
    # ∂C/∂xp[b,c,n·s + t·d] += Σ_o dy[b,o,n] · w[o,c,t]
    cols = np.moveaxis(np.tensordot(dy, cache.w, axes=([1], [0])), 1 + nd, 1)  # (B, C_in, *out, *kernel)
    padded_shape = cache.x_shape[:2] + tuple(n + 2 * p for n, p in zip(cache.x_shape[2:], cache.padding))
    dxp = np.zeros(padded_shape, dtype=np.result_type(dy, cache.w))
    lead = (slice(None),) * (2 + nd)
    add_taps(dxp, lambda t: cols[lead + t], tuple(cache.w.shape[2:]), cache.out, cache.stride, cache.dilation)
    dx = np.ascontiguousarray(crop_spatial(dxp, cache.padding))
    return dx, dw, db


def conv1d_forward(x, w, b=None, *, stride=1, padding="same", dilation=1):
    """1-D convolution: x (B, C_in, N), w (C_out, C_in, k), b (C_out,) or None → (y (B, C_out, N_out), cache)."""
    return conv_forward(x, w, b, stride=stride, padding=padding, dilation=dilation, nd=1)


def conv1d_backward(dy, cache: ConvCache):
    """dy (B, C_out, N_out) → (dx (B, C_in, N), dw (C_out, C_in, k), db (C_out,) or None)."""
    return conv_backward(dy, cache)


def conv2d_forward(x, w, b=None, *, stride=1, padding="same", dilation=1):
    """2-D convolution: x (B, C_in, H, W), w (C_out, C_in, kh, kw) → (y (B, C_out, H_out, W_out), cache)."""
    return conv_forward(x, w, b, stride=stride, padding=padding, dilation=dilation, nd=2)


def conv2d_backward(dy, cache: ConvCache):
    """dy (B, C_out, H_out, W_out) → (dx (B, C_in, H, W), dw (C_out, C_in, kh, kw), db (C_out,) or None)."""
    return conv_backward(dy, cache)
