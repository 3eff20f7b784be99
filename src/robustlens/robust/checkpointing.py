"""Training checkpoints (``out/checkpoint.safetensors``): the network under ``model.``, the optimiser's
per-parameter buffers under ``optim.<param index>.<name>``, the global torch RNG state under ``rng.torch``, and a
JSON header (``format``, ``step``, ``epoch``, the training config, the optimiser's hyper-parameters, the
scheduler position, the last metrics), and with weight averaging its average under ``ema.<name>``. Written
atomically.

A *compact* checkpoint (``save_checkpoint(..., compact=True)``) is the same file at half the size, to keep a long run's
state in git between machines: weights in float16 (BatchNorm statistics stay float32), optimiser buffers in
bfloat16 (float32's range: momentum entries below float16's smallest normal value are common). Resuming from
it continues the run with weights rounded to float16 — within 2⁻¹¹ relative of the float32 ones — so the
resumed run is close to, not bit-identical with, an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from robustlens.errors import UserError
from robustlens.models.checkpoints import read_metadata, save_weights

CHECKPOINT_FORMAT = "robustlens-train-checkpoint/1"


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = v
            else:
                scalars[f"{idx}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    for key, v in meta.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


_KEEP_FLOAT32 = ("running_mean", "running_var")


def compact_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint with float32 weights as float16 (those within float16's range) and
    optimiser buffers as bfloat16; everything else as it is."""
    out = {}
    for k, v in tensors.items():
        if v.dtype == torch.float32 and v.numel():
            if k.startswith("optim."):
                v = v.bfloat16()
            elif k.startswith(("model.", "ema.")) and not k.endswith(_KEEP_FLOAT32) and float(v.abs().max()) < 6.0e4:
                v = v.half()
        out[k] = v
    return out


def save_checkpoint(path: Path, net: nn.Module, opt: torch.optim.Optimizer, meta: dict, *,
                    compact: bool = False, extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a training checkpoint (see the module docstring), atomically; ``compact``: half-size dtypes;
    ``extra``: more tensors under their own keys (the weight average's ``ema.<name>``)."""
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    tensors.update(opt_tensors)
    tensors.update(extra or {})
    tensors["rng.torch"] = torch.get_rng_state()
    if compact:
        tensors = compact_tensors(tensors)
        meta = {**meta, "compact": {"weights": "float16", "optimizer": "bfloat16"}}
    return save_weights(tensors, path, {**meta, "format": CHECKPOINT_FORMAT, "optimizer": opt_meta})


def load_checkpoint(path: Path, net: nn.Module, opt: torch.optim.Optimizer, average=None) -> dict:
    """Restore weights, optimiser and RNG (and ``average``, a :class:`~robustlens.robust.averaging.WeightAverage`,
    when given) from a training checkpoint; returns its metadata."""
    from safetensors.torch import load_file

    from robustlens.models.checkpoints import load_into

    meta = read_metadata(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a robustlens training checkpoint")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise UserError(f"cannot read checkpoint {path}: {e}") from None
    load_into(net, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, source=str(path))
    _restore_optimizer(opt, {k: v for k, v in tensors.items() if k.startswith("optim.")}, meta["optimizer"])
    if average is not None:
        average.load_tensors(tensors, source=str(path))
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return meta
