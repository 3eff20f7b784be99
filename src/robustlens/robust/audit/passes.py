"""Counting the model passes of an audit: every top-level module call on a whole input batch.

A global forward pre-hook (``torch.nn.modules.module.register_module_forward_pre_hook``) sees every module
call; a call is a *forward pass* when no other module call is in progress (the outermost one: the user's model
or the attack's private, BatchNorm-folded copy of it) and its first argument has the model's input shape
(C, H, W). Its rows are counted as image-forward passes, and as image-backward passes when the input requires
a gradient (the attacks then take one backward pass through it). The L∞ Square attack's incremental queries
(:mod:`robustlens.optim.local`) recompute only a window of each layer: they are counted apart, as
*incremental* image queries (each far cheaper than a forward pass), not as passes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.nn.modules import module as nn_module

from robustlens.optim.local import listening_to_queries


class PassCounter:
    """Image-forward and image-backward passes on inputs of shape (N, *``shape``)."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)
        self.forward = 0
        self.backward = 0
        self.incremental = 0
        self._depth = 0

    def _pre(self, module, args) -> None:
        if self._depth == 0 and args and isinstance(args[0], torch.Tensor) and tuple(args[0].shape[1:]) == self.shape:
            rows = int(args[0].shape[0])
            self.forward += rows
            if torch.is_grad_enabled() and args[0].requires_grad:
                self.backward += rows
        self._depth += 1

    def _post(self, module, args, output) -> None:
        self._depth -= 1

    def _query(self, n: int) -> None:
        self.incremental += n

    @contextlib.contextmanager
    def counting(self) -> Iterator["PassCounter"]:
        pre = nn_module.register_module_forward_pre_hook(self._pre)
        post = nn_module.register_module_forward_hook(self._post, always_call=True)
        try:
            with listening_to_queries(self._query):
                yield self
        finally:
            pre.remove()
            post.remove()
            self._depth = 0

    def take(self) -> dict[str, int]:
        """The counts so far, reset to zero."""
        out = {"forward": self.forward, "backward": self.backward, "incremental": self.incremental}
        self.forward = self.backward = self.incremental = 0
        return out
