"""Training checkpoints (``out/checkpoint.safetensors``): the network under ``model.``, the optimiser's
per-parameter buffers under ``optim.<param index>.<name>``, the global torch RNG state under ``rng.torch``, and a
JSON header (``format``, ``step``, ``epoch``, the training config, the optimiser's hyper-parameters, the
scheduler position, the last metrics). Written atomically."""

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


def save_checkpoint(path: Path, net: nn.Module, opt: torch.optim.Optimizer, meta: dict) -> Path:
    """Write a training checkpoint (see the module docstring), atomically."""
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    return save_weights(tensors, path, {**meta, "format": CHECKPOINT_FORMAT, "optimizer": opt_meta})


def load_checkpoint(path: Path, net: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Restore weights, optimiser and RNG from a training checkpoint; returns its metadata."""
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
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return meta
