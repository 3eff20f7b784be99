"""Memory-layout helpers shared by the models and the engine (a leaf module: it imports nothing of the package)."""

from __future__ import annotations

import torch


def one_channel_nhwc(x: torch.Tensor) -> torch.Tensor:
    """A one-channel image batch (N,1,H,W) as a view with channels-last strides (H·W, 1, W, 1) — no copy when
    ``x`` is dense. Such a tensor counts as contiguous in both layouts, so ``.contiguous(channels_last)`` keeps
    its NCHW strides, and a convolution given those strides runs NCHW."""
    n, _, h, w = x.shape
    return x.reshape(n, h, w, 1).permute(0, 3, 1, 2)
