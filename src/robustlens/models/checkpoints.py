"""Weights files: reading them safely (``torch.load(..., weights_only=True)`` or safetensors, never plain
unpickling), recognising other projects' layouts (MadryLab robustness, RobustBench, timm, DataParallel) and
writing the project's own safetensors files with JSON metadata."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from robustlens.errors import UserError

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_SAFE_PICKLE_MODULES = ("torch", "collections", "builtins", "_codecs", "numpy")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch checkpoint, loaded without running pickled code.

    A torch checkpoint may be a plain state dict or a dict holding one under ``state_dict``, ``model`` or
    ``model_state_dict``. A file that cannot be read raises UserError saying what it is (empty, not a weights
    file, a truncated zip or pickle, a pickle with code, an invalid safetensors header, ...).
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file not found: {p}")
    try:
        with open(p, "rb") as f:
            head = f.read(16)
        size = p.stat().st_size
    except OSError as e:
        raise UserError(f"cannot read weights file {p}: {e.strerror or e}") from None
    if size == 0:
        raise UserError(f"cannot read weights file {p}: the file is empty")
    if p.suffix == ".safetensors" or _looks_safetensors(head, size):
        return _read_safetensors(p, size)
    if not (head.startswith(ZIP_MAGIC) or _looks_pickle(head)):
        raise UserError(f"cannot read weights file {p}: not a weights file (neither a torch zip archive, a pickle "
                        f"nor safetensors; it starts with bytes {head[:8].hex(' ')})")
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols before refusing or loading
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged files: say what the file is instead
        raise UserError(f"cannot read checkpoint {p}: {_diagnose_torch_file(p, head, e)}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{p} does not hold a state dict of tensors (found {type(obj).__name__})")
    return obj


def _looks_pickle(head: bytes) -> bool:
    """A pickle of protocol 2-5 (what torch writes) starts with PROTO (0x80) and the protocol number."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _looks_safetensors(head: bytes, size: int) -> bool:
    """Safetensors: an 8-byte little-endian header length, then a JSON object."""
    return len(head) >= 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8


def _read_safetensors(p: Path, size: int) -> dict[str, torch.Tensor]:
    """Check the header (length, JSON, offsets within the file) and load the tensors."""
    from safetensors.torch import load_file

    with open(p, "rb") as f:
        n = int.from_bytes(f.read(8).ljust(8, b"\0"), "little")
        if size < 8 or n > size - 8 or n > 100_000_000:
            raise UserError(f"invalid safetensors header in {p}: it says {n} header bytes but the file holds {size}")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"invalid safetensors header in {p}: the header is not valid JSON") from None
    if not isinstance(header, dict):
        raise UserError(f"invalid safetensors header in {p}: the header is not a JSON object")
    try:
        end = max([int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"] or [0])
    except (TypeError, KeyError, IndexError, ValueError):
        raise UserError(f"invalid safetensors header in {p}: an entry has no valid data_offsets") from None
    if 8 + n + end > size:
        raise UserError(f"truncated safetensors file {p}: its tensors need {8 + n + end} bytes, it holds {size}")
    try:
        return load_file(str(p))
    except Exception as e:  # safetensors raises its own error types
        raise UserError(f"cannot read safetensors file {p}: {' '.join(str(e).split()) or type(e).__name__}") from None


def _diagnose_torch_file(p: Path, head: bytes, error: Exception) -> str:
    """Why ``torch.load`` failed on ``p``, from its bytes (never unpickled): the reason for the user."""
    import zipfile

    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return "a truncated or damaged zip archive (the torch checkpoint was cut short or corrupted)"
        if bad is not None:
            return f"a damaged zip archive (member {bad} fails its checksum)"
        pickles = [n for n in names if n.endswith("data.pkl")]
        if not pickles:
            return "a zip archive, but not a torch checkpoint (no data.pkl inside)"
        with zipfile.ZipFile(p) as z:
            return _diagnose_pickle(z.read(pickles[0]), error)
    return _diagnose_pickle(p.read_bytes(), error)


def _pickle_globals(data: bytes) -> list[str]:
    """The ``module.name`` globals of the pickles at the start of ``data`` (torch's legacy format is several
    pickles in a row, then raw storage bytes); scanned with :mod:`pickletools`, nothing is executed. A pickle
    that breaks or ends early raises ``ValueError``."""
    import pickletools

    found: list[str] = []
    pos = 0
    while pos < len(data) and _looks_pickle(data[pos:pos + 2]) and len(found) < 1000:
        strings: list[str] = []
        end: int | None = None
        try:
            for op, arg, at in pickletools.genops(data[pos:]):
                if isinstance(arg, str):
                    strings.append(arg)
                if op.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif op.name == "STOP":
                    end = pos + (at or 0) + 1
        except Exception as e:  # genops stops at a byte that is no opcode, or at the end of the data
            raise ValueError(str(e)) from None
        if end is None:
            raise ValueError("no STOP opcode")
        pos = end
    return found


def _diagnose_pickle(data: bytes, error: Exception) -> str:
    """Why torch could not load the pickle ``data``: truncated, code that would run, or torch's own reason."""
    try:
        globals_seen = _pickle_globals(data)
    except ValueError:
        return "a truncated or damaged pickle (it ends or breaks before its STOP opcode)"
    unsafe = [g for g in globals_seen if not g.startswith(_SAFE_PICKLE_MODULES)]
    if unsafe:
        return f"refused: the pickle would run code ({', '.join(dict.fromkeys(unsafe))}); only tensors are loaded"
    if isinstance(error, EOFError):
        return "truncated: the file ends before the checkpoint's data does"
    first = " ".join(str(error).split())[:200]
    return f"torch cannot load it ({type(error).__name__}: {first or 'no reason given'})"


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


def strip_module(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
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
    keys, _ = strip_module(state)
    return any(k.startswith("model.") for k in keys) and any(k.startswith("normalizer.") for k in keys)


def _vector(t: torch.Tensor) -> tuple[float, ...]:
    return tuple(float(f"{float(v):.7g}") for v in t.detach().reshape(-1))


def read_normalizer(state: dict[str, torch.Tensor], prefix: str) -> tuple[tuple | None, tuple | None]:
    found: dict[str, tuple[float, ...]] = {}
    for what, names in _NORMALIZER_SUFFIXES.items():
        for n in names:
            if prefix + n in state:
                found[what] = _vector(state[prefix + n])
                break
    return found.get("mean"), found.get("std")


def _is_normalizer_key(key: str) -> bool:
    """``mu``, ``sigma``, ``normalize.mean``, ...: a normaliser buffer at the top level or one module down."""
    return key.count(".") <= 1 and key.rsplit(".", 1)[-1] in {n for names in _NORMALIZER_SUFFIXES.values()
                                                              for n in names}


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
    stripped, module_prefix = strip_module(state)
    if kind == "madry" and not is_madry(stripped):
        raise UserError(f"{path} is not a MadryLab robustness checkpoint (no model.* and normalizer.* keys)")
    madry = is_madry(stripped)
    prefix = "model." if madry else _pick_prefix(stripped, set(own))
    sub = {k[len(prefix):]: v for k, v in stripped.items() if k.startswith(prefix)}
    # a normaliser carried as buffers beside the network (RobustBench's Wong2020FastNet: mu, sigma) is read, not
    # loaded, when the network has no such buffers
    carried = {prefix + k for k in sub if k not in own and _is_normalizer_key(k)}
    sub = {k: v for k, v in sub.items() if prefix + k not in carried}
    ignored = [module_prefix + k for k in stripped if not k.startswith(prefix) or k in carried]
    outside = {k: v for k, v in stripped.items() if not k.startswith(prefix) or k in carried}
    mean = std = None
    for cand in ("normalizer.",) if madry else ("normalize.", "normalizer.", "norm.", ""):
        mean, std = read_normalizer(outside, cand)
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
