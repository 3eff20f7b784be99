"""Safe conversion of other projects' pickled checkpoints (MadryLab's dill files) to safetensors: a restricted
unpickler builds only tensors, storages and containers; every other global becomes an inert stub that is never
imported, so no code in the file runs."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch

from robustlens.errors import UserError
from robustlens.models.checkpoints import is_madry, read_normalizer, save_weights, strip_module

# Exactly the globals the upstream layouts use (tests/data/upstream/*.json, made by scripts/upstream_manifests.py
# from files written by MadryLab robustness, RobustBench's classes and torchvision); storage classes
# (torch.cuda.FloatStorage, ...) are resolved by torch before the unpickler is asked. tests/test_upstream_layouts.py
# keeps the two equal.
_ALLOWED_GLOBALS = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2")}


class _Stub:
    """Stands in for any global the restricted unpickler refuses to import: it absorbs construction, state and
    items and never runs anything."""

    refused = ""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Stub()

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds tensors, storages and plain containers only; every other global becomes a :class:`_Stub`
    (recorded in ``refused``), so no pickled code is imported or run."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.refused: set[str] = set()

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        self.refused.add(f"{module}.{name}")
        return type(f"Stub_{name}", (_Stub,), {"refused": f"{module}.{name}"})


def _restricted_pickle_module():
    import types

    mod = types.ModuleType("robustlens_restricted_pickle")
    mod.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
    mod.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()  # type: ignore[attr-defined]
    mod.__name__ = "robustlens_restricted_pickle"
    return mod


def read_foreign_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside a torch checkpoint written by another project, even one pickled with dill (MadryLab
    robustness): tensors and containers are rebuilt, any other object (optimizer schedules, argument namespaces,
    functions) is replaced by an inert stub, never imported. The state dict is ``ckpt["model"]`` /
    ``ckpt["state_dict"]`` or the checkpoint itself, and must hold tensors only."""
    p = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            # weights_only=False is required by torch with a custom pickle module; the module's Unpickler is the
            # restricted one above, which refuses every global outside _ALLOWED_GLOBALS.
            obj = torch.load(p, map_location="cpu", pickle_module=_restricted_pickle_module(), weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot read checkpoint {p}: {str(e).strip().splitlines()[0] if str(e).strip() else e}") \
            from None
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{p} does not hold a state dict of tensors (under 'model', 'state_dict' or at the top)")
    return dict(obj)


def convert_checkpoint(src: str | Path, dst: str | Path, metadata: dict | None = None) -> Path:
    """Convert a foreign checkpoint ``src`` to the project's safetensors file ``dst`` (see
    :func:`read_foreign_checkpoint`): a ``module.`` prefix is stripped, and for a MadryLab checkpoint only the
    network (``model.*``) is kept — the attacker's copy is dropped — with the normaliser's mean/std stored in
    the metadata. Returns ``dst``."""
    state, _ = strip_module(read_foreign_checkpoint(src))
    meta = dict(metadata or {})
    if is_madry(state):
        mean, std = read_normalizer(state, "normalizer.")
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        meta.update({"layout": "madry", "checkpoint_mean": mean, "checkpoint_std": std})
    return save_weights(state, dst, meta)
