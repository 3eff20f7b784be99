"""Argument checks shared by the reference layers.

Every check raises :class:`ShapeError` (a :class:`ValueError`) whose message starts with the
operation's name and quotes the offending shapes, e.g.
``conv1d: input has 3 channels (x.shape=(2, 3, 10)) but weight expects 4 (w.shape=(5, 4, 3))``.
"""

from __future__ import annotations

import numbers

import numpy as np


class ShapeError(ValueError):
    """Bad shapes or hyper-parameters given to a reference layer."""


def as_float_array(a, name: str, op: str) -> np.ndarray:
    """``a`` as a floating-point array (integers and bools become float64)."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiub":
        raise ShapeError(f"{op}: {name} must be a real array, got dtype {arr.dtype} ({name}.shape={arr.shape})")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return arr


def check_ndim(a: np.ndarray, ndim: int, name: str, op: str, layout: str) -> None:
    """Raise unless ``a.ndim == ndim``; ``layout`` names the axes, e.g. ``"(B, C_in, N)"``."""
    if a.ndim != ndim:
        raise ShapeError(f"{op}: {name} must be {ndim}-D {layout}, got {name}.shape={a.shape}")


def int_tuple(value, nd: int, what: str, op: str, *, minimum: int) -> tuple[int, ...]:
    """``value`` (an int or a sequence of ``nd`` ints) as a tuple of ``nd`` ints, each ``>= minimum``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        values = (int(value),) * nd
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise ShapeError(f"{op}: {what} must be an int or {nd} ints, got {value!r}") from None
        if len(values) != nd or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values
        ):
            raise ShapeError(f"{op}: {what} must be an int or {nd} ints, got {value!r}")
        values = tuple(int(v) for v in values)
    for v in values:
        if v < minimum:
            kind = "positive" if minimum == 1 else "non-negative"
            raise ShapeError(f"{op}: {what} must be {kind}, got {value!r}")
    return values


def same_padding(kernel: tuple[int, ...], dilation: tuple[int, ...], stride: tuple[int, ...],
                 op: str, shape_note: str) -> tuple[int, ...]:
    """Padding ``p = d(k-1)/2`` per axis that keeps the length; needs stride 1 and odd ``k``."""
    if any(s != 1 for s in stride):
        raise ShapeError(f"{op}: padding='same' keeps the size only with stride 1, got stride={stride} ({shape_note})")
    for k in kernel:
        if k % 2 == 0:
            raise ShapeError(
                f"{op}: padding='same' needs an odd kernel size so that (k-1)/2 is whole, "
                f"got kernel size {kernel} ({shape_note})"
            )
    return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))


def output_size(n: int, k: int, s: int, p: int, d: int) -> int:
    """⌊(n + 2p − d(k−1) − 1)/s⌋ + 1, the output length of a sliding window (may be ≤ 0)."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def output_shape(spatial: tuple[int, ...], kernel, stride, padding, dilation, op: str, shape_note: str
                 ) -> tuple[int, ...]:
    """Output spatial shape; raises when the (padded) input is shorter than the dilated kernel."""
    out = []
    for n, k, s, p, d in zip(spatial, kernel, stride, padding, dilation):
        o = output_size(n, k, s, p, d)
        if o < 1:
            raise ShapeError(
                f"{op}: padded input length {n + 2 * p} (n={n}, padding={p}) is shorter than the "
                f"dilated kernel extent {d * (k - 1) + 1} (k={k}, dilation={d}) ({shape_note})"
            )
        out.append(o)
    return tuple(out)


def check_grad_shape(dy: np.ndarray, expected: tuple[int, ...], op: str) -> None:
    """Raise unless the upstream gradient has the forward output's shape."""
    if tuple(dy.shape) != tuple(expected):
        raise ShapeError(f"{op} backward: dy.shape={tuple(dy.shape)} but the forward output had shape {tuple(expected)}")
