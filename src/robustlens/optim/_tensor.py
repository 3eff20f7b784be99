"""Per-example tensor shapes: every batch is (N, ...), and per-example values are (N,)."""

from __future__ import annotations

import torch


def flat(t: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N, D): one row per example."""
    return t.reshape(t.shape[0], -1)


def per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-example vector (N,) shaped to broadcast against ``like`` (N, ...)."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))
