"""Per-example bookkeeping of one optimisation: the best iterate of each example, and which examples are
still running (early stop).

- :class:`BestIterates`: each example keeps its own best iterate — a successful one beats an unsuccessful
  one, then the lower loss wins — with its loss, success flag and whether an *exact* pass judged it (float32,
  the plain model, the returned form of the image: see :func:`robustlens.optim.engine.optimize`).
- :class:`ActiveSet`: the rows of the batch still being optimised. Stopped examples either leave the batch at
  once or are carried, frozen, until few enough remain (:data:`COMPACT_BELOW`).
"""

from __future__ import annotations

import torch

from robustlens.optim._tensor import per_example

# early stop: drop the stopped examples from the batch once at most this fraction of it is still running.
# CPU: at once (measured fastest); other devices: once it has halved (each new batch size costs cuDNN new plans)
COMPACT_BELOW = {"cpu": 1.0}
COMPACT_BELOW_OTHER = 0.5


class BestIterates:
    """Best iterate per example of a batch ``x0`` (N, ...). ``x`` (N, ...), ``loss`` (N,), ``success`` (N,)
    bool, ``exact`` (N,) bool: the best iterate was judged by the exact pass."""

    def __init__(self, x0: torch.Tensor):
        n, device = x0.shape[0], x0.device
        self.x = x0.clone()
        self.loss = torch.full((n,), float("inf"), device=device)
        self.success = torch.zeros(n, dtype=torch.bool, device=device)
        self.exact = torch.ones(n, dtype=torch.bool, device=device)
        self._fallback: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # x, loss, present

    def update(self, rows: torch.Tensor, img: torch.Tensor, loss: torch.Tensor, success: torch.Tensor,
               exact: torch.Tensor, frozen: torch.Tensor) -> None:
        """Offer the iterates ``img`` of the examples ``rows`` (their losses, successes and exact flags);
        ``frozen`` rows (stopped, still carried in the batch) are ignored. Masked writes: no host sync."""
        b_loss, b_succ = self.loss[rows], self.success[rows]
        live = ~frozen
        better = ((success & ~b_succ) | ((success == b_succ) & (loss < b_loss))) & live
        self.x[rows] = torch.where(per_example(better, img), img.to(self.x.dtype), self.x[rows])
        self.loss[rows] = torch.where(better, loss.float(), b_loss)
        self.success[rows] = (success & live) | b_succ
        self.exact[rows] = torch.where(better, exact, self.exact[rows])

    def candidates(self, rows: torch.Tensor, loss: torch.Tensor, success: torch.Tensor,
                   frozen: torch.Tensor) -> torch.Tensor:
        """(len(rows),) bool: the rows whose iterate would become their best if it really is successful."""
        b_loss, b_succ = self.loss[rows], self.success[rows]
        return success & ~frozen & (~b_succ | (loss < b_loss))

    def replace(self, rows: torch.Tensor, x: torch.Tensor, loss: torch.Tensor, success: torch.Tensor | None) -> None:
        """Overwrite the best iterates of ``rows`` with exactly judged ones (``success`` None: keep the flags)."""
        self.x[rows], self.loss[rows], self.exact[rows] = x.to(self.x.dtype), loss.float(), True
        if success is not None:
            self.success[rows] = success


    def keep_fallback(self, rows: torch.Tensor) -> None:
        """Before ``rows`` take a provisional best: keep each one's current best as its fallback when it is an
        exact success (a provisional best leaves the fallback as it was)."""
        if self._fallback is None:
            self._fallback = (self.x.clone(), self.loss.clone(), torch.zeros_like(self.success))
        fx, floss, present = self._fallback
        keep = rows[self.exact[rows] & self.success[rows]]
        fx[keep], floss[keep], present[keep] = self.x[keep], self.loss[keep], True

    def restore_fallback(self, rows: torch.Tensor) -> None:
        """``rows`` whose provisional best failed the exact verdict go back to their fallback, if they have one."""
        if self._fallback is None or len(rows) == 0:
            return
        fx, floss, present = self._fallback
        back = rows[present[rows]]
        self.x[back], self.loss[back], self.success[back], self.exact[back] = fx[back], floss[back], True, True


class ActiveSet:
    """The examples still optimised in one restart: ``index`` (M,) rows of the whole batch, ``frozen`` (M,)
    bool marks stopped examples still carried in the batch."""

    def __init__(self, index: torch.Tensor):
        self.index = index
        self.frozen = torch.zeros(len(index), dtype=torch.bool, device=index.device)
        self.compact_below = COMPACT_BELOW.get(index.device.type, COMPACT_BELOW_OTHER)

    def __len__(self) -> int:
        return len(self.index)

    def running(self) -> int:
        return len(self.index) - int(self.frozen.sum())

    def stop(self, rows: torch.Tensor) -> torch.Tensor | None:
        """Stop the examples where ``rows`` (M,) bool is set. Returns the mask of rows to keep when the batch
        should shrink now (the caller drops them from its own per-row tensors), else None."""
        self.frozen = self.frozen | rows
        running = self.running()
        if running == 0 or running > self.compact_below * len(self.index):
            return None
        keep = ~self.frozen
        self.index, self.frozen = self.index[keep], self.frozen[keep]
        return keep
