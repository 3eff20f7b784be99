"""Sliding windows over the spatial axes of a (B, C, *spatial) array, and their adjoint.

``window_view`` gives, without copying, the array ``win[b, c, *o, *t] = xp[b, c, *(o·s + t·d)]``
(output position ``o``, kernel tap ``t``, stride ``s``, dilation ``d``) over an already padded input ``xp``.
``add_taps`` is its adjoint for one tap: it adds a (B, C, *out) array into the positions ``o·s + t·d``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def pad_spatial(x: np.ndarray, padding: tuple[int, ...], value: float = 0.0) -> np.ndarray:
    """Pad the trailing ``len(padding)`` axes of ``x`` by ``padding[i]`` on both sides with ``value``."""
    if not any(padding):
        return x
    widths = [(0, 0)] * (x.ndim - len(padding)) + [(p, p) for p in padding]
    return np.pad(x, widths, mode="constant", constant_values=value)


def window_view(xp: np.ndarray, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]
                ) -> np.ndarray:
    """Read-only view of shape (B, C, *out, *kernel) of the windows of the padded input ``xp``."""
    nd = len(kernel)
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    axes = tuple(range(xp.ndim - nd, xp.ndim))
    win = sliding_window_view(xp, extent, axis=axes)
    lead = (slice(None),) * (xp.ndim - nd)
    return win[lead + tuple(slice(None, None, s) for s in stride) + tuple(slice(None, None, d) for d in dilation)]


def tap_slices(tap: tuple[int, ...], out: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]
               ) -> tuple[slice, ...]:
    """Slices of the padded spatial axes that tap ``tap`` reads for output positions 0..out-1."""
    return tuple(
        slice(t * d, t * d + s * (o - 1) + 1, s) for t, o, s, d in zip(tap, out, stride, dilation)
    )


def add_taps(dxp: np.ndarray, per_tap, kernel: tuple[int, ...], out: tuple[int, ...],
             stride: tuple[int, ...], dilation: tuple[int, ...]) -> None:
    """``dxp[..., o·s + t·d] += per_tap(t)[..., o]`` for every tap ``t`` (a loop over taps, not pixels)."""
    lead = (slice(None),) * (dxp.ndim - len(kernel))
    for tap in np.ndindex(*kernel):
        dxp[lead + tap_slices(tap, out, stride, dilation)] += per_tap(tap)


def crop_spatial(xp: np.ndarray, padding: tuple[int, ...]) -> np.ndarray:
    """Undo :func:`pad_spatial`."""
    if not any(padding):
        return xp
    nd = len(padding)
    lead = (slice(None),) * (xp.ndim - nd)
    return xp[lead + tuple(slice(p, xp.shape[xp.ndim - nd + i] - p) for i, p in enumerate(padding))]
