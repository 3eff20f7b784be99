"""Weights files: reading them safely (``torch.load(..., weights_only=True)`` or safetensors, never plain
unpickling), recognising other projects' layouts (MadryLab robustness, RobustBench, timm, DataParallel) and
writing the project's own safetensors files with JSON metadata."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from robustlens.errors import UserError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch checkpoint, loaded without running pickled code.

    A torch checkpoint may be a plain state dict or a dict holding one under ``state_dict``, ``model`` or
    ``model_state_dict``.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:  # safetensors raises its own error types
            raise UserError(f"cannot read safetensors file {p}: {e}") from None
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols before refusing or loading
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise UserError(f"refusing to load {p}: it holds pickled objects other than tensors ({first})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise UserError(f"cannot read checkpoint {p}: {e}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{p} does not hold a state dict of tensors")
    return obj


def load_into(net: nn.Module, state: dict[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """Load ``state`` strictly into ``net``; mismatches raise UserError naming missing/unexpected keys."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong_shape:

        def show(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if wrong_shape:
            parts.append(f"shape mismatch: {show(wrong_shape)}")
        raise UserError(f"{source} does not match the architecture {type(net).__name__}: " + "; ".join(parts))
    net.load_state_dict(state, strict=True)


# --- formats: MadryLab robustness, RobustBench/timm/DataParallel prefixes, the project's own safetensors -----

WEIGHTS_KINDS = ("madry",)
_NORMALIZER_SUFFIXES = {"mean": ("new_mean", "mean", "mu"), "std": ("new_std", "std", "sigma")}


@dataclass
class LoadedWeights:
    """What :func:`load_weights` loaded: ``source`` (for display), ``kind`` (``madry``, ``robustlens`` or
    ``state_dict``), the key ``prefix`` that was stripped, the normalisation ``mean``/``std`` the checkpoint
    carried (None if none), ``ignored`` keys outside the network (e.g. Madry's attacker copy) and the
    project's ``metadata``."""

    source: str
    kind: str
    prefix: str = ""
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    ignored: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


def split_weights_spec(spec: str | Path) -> tuple[str | None, Path]:
    """``"madry:PATH"`` -> ("madry", PATH); ``"PATH"`` -> (None, PATH) (the kind is then detected)."""
    text = str(spec)
    kind, sep, rest = text.partition(":")
    if sep and kind in WEIGHTS_KINDS:
        return kind, Path(rest)
    return None, Path(text)


def is_weights_spec(spec: str) -> bool:
    """True when ``spec`` names an existing weights file (optionally as ``madry:PATH``)."""
    return split_weights_spec(spec)[1].is_file()


def read_metadata(path: str | Path) -> dict:
    """The project metadata stored in a safetensors header (``{}`` for other files)."""
    p = Path(path)
    if p.suffix != ".safetensors" or not p.is_file():
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        raise UserError(f"cannot read safetensors file {p}: {e}") from None
    try:
        return json.loads(meta.get("robustlens", "{}"))
    except json.JSONDecodeError:
        raise UserError(f"{p}: the robustlens metadata in its header is not valid JSON") from None


def save_weights(state: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> Path:
    """Write ``state`` as safetensors with ``metadata`` (JSON) in the header and beside it as ``.json``;
    atomic (written to a temporary file, then renamed). Returns the path."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(metadata or {})
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    tmp = p.with_name(p.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"robustlens": json.dumps(meta)})
    os.chmod(tmp, 0o644)
    os.replace(tmp, p)
    side = p.with_suffix(".json")
    tmp_side = side.with_name(side.name + ".tmp")
    tmp_side.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_side, side)
    return p


def _strip_module(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Remove a DataParallel/DDP ``module.`` (or torch.compile ``_orig_mod.``) prefix carried by every key."""
    prefix = ""
    for p in ("module.", "_orig_mod."):
        while state and all(k.startswith(p) for k in state):
            state = {k[len(p):]: v for k, v in state.items()}
            prefix += p
    return state, prefix


def is_madry(state: dict[str, torch.Tensor]) -> bool:
    """A MadryLab ``robustness`` AttackerModel state dict: ``[module.]model.*``, ``[module.]normalizer.*``
    (and usually ``[module.]attacker.model.*``, ``[module.]attacker.normalize.*``)."""
    keys, _ = _strip_module(state)
    return any(k.startswith("model.") for k in keys) and any(k.startswith("normalizer.") for k in keys)


def _vector(t: torch.Tensor) -> tuple[float, ...]:
    return tuple(float(f"{float(v):.7g}") for v in t.detach().reshape(-1))


def _normalizer(state: dict[str, torch.Tensor], prefix: str) -> tuple[tuple | None, tuple | None]:
    found: dict[str, tuple[float, ...]] = {}
    for what, names in _NORMALIZER_SUFFIXES.items():
        for n in names:
            if prefix + n in state:
                found[what] = _vector(state[prefix + n])
                break
    return found.get("mean"), found.get("std")


def _pick_prefix(state: dict[str, torch.Tensor], own: set[str]) -> str:
    """The key prefix under which ``state`` holds the network whose keys are ``own``: a prefix whose sub-dict
    has exactly the keys ``own``, else one whose sub-dict has all of them, else none (``""``), so that a
    checkpoint of another architecture is reported against its own key names."""
    prefixes = {""}
    for k in state:
        parts = k.split(".")
        for i in range(1, min(len(parts), 4)):
            prefixes.add(".".join(parts[:i]) + ".")
    subs = {p: {k[len(p):] for k in state if k.startswith(p) and not k.endswith("num_batches_tracked")}
            for p in sorted(prefixes, key=len)}
    own = {k for k in own if not k.endswith("num_batches_tracked")}
    for test in (lambda sub: sub == own, lambda sub: own <= sub):
        for p, sub in subs.items():
            if test(sub):
                return p
    return ""


def load_weights(net: nn.Module, spec: str | Path) -> LoadedWeights:
    """Load a weights file into ``net`` (strictly; mismatches raise UserError naming the keys).

    ``spec`` is a path or ``madry:PATH``. Understood layouts, detected from the keys:

    - MadryLab ``robustness`` checkpoints (``ckpt["model"]`` with ``module.model.``, ``module.attacker.model.``
      and ``module.normalizer.new_mean/new_std``): the ``model.`` weights are loaded, the attacker copy is
      ignored, the normaliser's mean/std are returned;
    - RobustBench/timm/DataParallel state dicts: a prefix (``module.``, ``model.``, ...) shared by the network's
      keys is stripped; normaliser buffers beside it (``normalize.mean``/``std``, ``mu``/``sigma``) are returned;
    - the project's safetensors files (:func:`save_weights`), metadata returned.

    Missing ``num_batches_tracked`` buffers (old checkpoints) are kept from ``net``.
    """
    kind, path = split_weights_spec(spec)
    state = read_state_dict(path)
    metadata = read_metadata(path)
    own = net.state_dict()
    stripped, module_prefix = _strip_module(state)
    if kind == "madry" and not is_madry(stripped):
        raise UserError(f"{path} is not a MadryLab robustness checkpoint (no model.* and normalizer.* keys)")
    madry = is_madry(stripped)
    prefix = "model." if madry else _pick_prefix(stripped, set(own))
    sub = {k[len(prefix):]: v for k, v in stripped.items() if k.startswith(prefix)}
    ignored = [module_prefix + k for k in stripped if not k.startswith(prefix)]
    outside = {k: v for k, v in stripped.items() if not k.startswith(prefix)}
    mean = std = None
    for cand in ("normalizer.",) if madry else ("normalize.", "normalizer.", "norm.", ""):
        mean, std = _normalizer(outside, cand)
        if mean is not None:
            break
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in sub:
            sub[k] = v
    what = "MadryLab robustness checkpoint" if madry else "checkpoint"
    load_into(net, sub, source=f"{what} {path}" + (f" (keys under {module_prefix + prefix!r})" if prefix else ""))
    kind_found = "madry" if madry else ("robustlens" if metadata else "state_dict")
    return LoadedWeights(source=str(path), kind=kind_found, prefix=module_prefix + prefix, mean=mean, std=std,
                         ignored=ignored, metadata=metadata)


# --- safe conversion of other projects' pickles (MadryLab's dill checkpoints) to safetensors ---------------

_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("torch", "Size"),
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
}


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
        if (module, name) in _ALLOWED_GLOBALS or (module == "torch" and isinstance(getattr(torch, name, None),
                                                                                    torch.dtype)):
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
    state, _ = _strip_module(read_foreign_checkpoint(src))
    meta = dict(metadata or {})
    if is_madry(state):
        mean, std = _normalizer(state, "normalizer.")
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        meta.update({"layout": "madry", "checkpoint_mean": mean, "checkpoint_std": std})
    return save_weights(state, dst, meta)
