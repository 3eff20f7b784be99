"""Running one command as K processes (``torchrun --nproc_per_node=K -m robustlens ...``).

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init` joins the process group (``gloo`` on
CPU, ``nccl`` on CUDA) and picks the device. Without torchrun everything runs as a group of one, with no
process group at all. Work is split deterministically by :func:`shard` (batch ``b`` goes to rank
``b mod K``), and results are combined with :func:`all_reduce_sum`; only rank 0 prints and writes files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """This process's ``rank`` among ``world_size``, its ``device``, and the ``backend`` (None: one process)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device: torch.device | str = "cpu") -> Context:
    """Join the torchrun process group if there is one (idempotent); ``device`` "cuda" becomes
    ``cuda:LOCAL_RANK``. CPU threads are left as torch sets them (torchrun sets ``OMP_NUM_THREADS=1``)."""
    device = torch.device(device)
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Context(device=device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return Context(rank=rank, world_size=world, device=device, backend=backend)


def shutdown(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard(n_items: int, ctx: Context) -> list[int]:
    """The items of this rank when items are dealt round-robin: ``rank, rank + K, rank + 2K, ...``."""
    return list(range(ctx.rank, n_items, ctx.world_size))


def all_reduce_sum(values: torch.Tensor | Sequence[float], ctx: Context) -> torch.Tensor:
    """Element-wise sum over ranks (float64 on the reduction device; the input is not modified)."""
    t = torch.as_tensor(values, dtype=torch.float64).clone()
    if not ctx.distributed:
        return t
    dev = ctx.device if ctx.backend == "nccl" else torch.device("cpu")
    t = t.to(dev)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()
