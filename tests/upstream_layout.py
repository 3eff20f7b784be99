"""Layout manifests of torch checkpoint files: what a file holds (format, pickle protocol, globals, storage types
and locations, the nested structure with every tensor's shape, dtype, offset and stride; no weights), read
without importing or running anything the file names, and random-weight files written back from a manifest in
the same layout — torch 1.1's legacy format (several pickles, then raw storages, CUDA storage tags kept) or
torch's zip format.

Used by ``scripts/upstream_manifests.py`` (manifests of files the upstream code wrote) and by
``tests/test_upstream_layouts.py`` (files rebuilt from the committed manifests, loaded through robustlens)."""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

# torch 1.1's legacy serialization constants (torch/serialization.py)
MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
PROTOCOL_VERSION = 1001
SYS_INFO = {"protocol_version": PROTOCOL_VERSION, "little_endian": sys.byteorder == "little",
            "type_sizes": {"short": 2, "int": 4, "long": struct.Struct("=l").size}}
DTYPES = {"Float": torch.float32, "Half": torch.float16, "Double": torch.float64, "BFloat16": torch.bfloat16,
          "Long": torch.int64, "Int": torch.int32, "Short": torch.int16, "Char": torch.int8, "Byte": torch.uint8,
          "Bool": torch.bool}


def storage_dtype(type_name: str) -> torch.dtype:
    """``torch.cuda.FloatStorage`` -> torch.float32."""
    return DTYPES[type_name.rsplit(".", 1)[-1].removesuffix("Storage")]


# --- reading: a recording unpickler that imports nothing --------------------------------------------------

class _StorageType(str):
    """The storage class a pickle names (kept as its dotted name)."""


class _Storage:
    def __init__(self, index: int):
        self.index = index


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size, stride, requires_grad: bool):
        self.storage, self.offset, self.size, self.stride = storage, offset, list(size), list(stride)
        self.requires_grad = bool(requires_grad)


class _Opaque:
    """Any other global: recorded, never imported."""

    def __init__(self, name: str, args: tuple = ()):
        self.name, self.args = name, args


class _Recorder(pickle.Unpickler):
    """Unpickles a checkpoint's pickle into plain containers, :class:`_Tensor` leaves and :class:`_Opaque`
    stand-ins; records the globals and the storages (type, location, size) in first-use order."""

    def __init__(self, file, storages: list[dict], keys: dict):
        super().__init__(file)
        self.storages, self.keys = storages, keys
        self.globals: list[str] = []

    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if full not in self.globals:
            self.globals.append(full)
        if "Storage" in name:
            return _StorageType(full)
        if full == "torch._utils._rebuild_tensor_v2":
            return lambda storage, offset, size, stride, requires_grad, hooks, *rest: _Tensor(
                storage, offset, size, stride, requires_grad)
        if full == "collections.OrderedDict":
            return OrderedDict
        return lambda *args, **kwargs: _Opaque(full, args)

    def persistent_load(self, pid):
        typename, storage_type, key, location, numel = pid[:5]
        if typename != "storage":
            raise ValueError(f"unknown persistent id {typename!r}")
        if key not in self.keys:
            self.keys[key] = len(self.storages)
            view = pid[5] if len(pid) > 5 else None
            self.storages.append({"type": str(storage_type), "location": location, "numel": int(numel),
                                  "view": view is not None})
        return _Storage(self.keys[key])


def _node(obj: Any) -> Any:
    """The manifest node of an unpickled object."""
    if isinstance(obj, _Tensor):
        return {"type": "tensor", "storage": obj.storage.index, "offset": obj.offset, "shape": obj.size,
                "stride": obj.stride, "requires_grad": obj.requires_grad}
    if isinstance(obj, dict):
        node = {"type": type(obj).__name__, "items": [[k, _node(v)] for k, v in obj.items()]}
        attrs = vars(obj) if isinstance(obj, OrderedDict) else {}
        if attrs:
            node["attrs"] = {k: _node(v) for k, v in attrs.items()}
        return node
    if isinstance(obj, (list, tuple)):
        return {"type": type(obj).__name__, "items": [_node(v) for v in obj]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"type": type(obj).__name__, "value": obj}
    if isinstance(obj, _Opaque):
        return {"type": "object", "global": obj.name}
    return {"type": "object", "global": type(obj).__name__}


def _globals_of(data: bytes) -> tuple[int, list[str]]:
    """(protocol, globals) of one pickle, by scanning its opcodes."""
    proto, found, strings = 0, [], []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "PROTO":
            proto = int(arg)
        elif isinstance(arg, str):
            strings.append(arg)
        if op.name == "GLOBAL":
            found.append(str(arg).replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            found.append(f"{strings[-2]}.{strings[-1]}")
        if op.name == "STOP":
            break
    return proto, list(dict.fromkeys(found))


def read_layout(path: str | Path) -> dict:
    """The layout manifest of a torch checkpoint file (no weights)."""
    data = Path(path).read_bytes()
    storages: list[dict] = []
    keys: dict = {}
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            name = next(n for n in z.namelist() if n.endswith("data.pkl"))
            pkl = z.read(name)
            records = sorted(n.split("/", 1)[1] for n in z.namelist())
        rec = _Recorder(io.BytesIO(pkl), storages, keys)
        obj = rec.load()
        fmt: dict = {"format": "zip", "records": [r for r in records if not r.startswith("data/")]}
    else:
        f = io.BytesIO(data)
        header = [pickle.load(f) for _ in range(3)]  # magic number, protocol version, sys_info (plain values)
        start = f.tell()
        rec = _Recorder(f, storages, keys)
        obj = rec.load()
        pkl = data[start:f.tell()]
        order = pickle.load(f)
        fmt = {"format": "legacy", "magic_number": hex(header[0]), "protocol_version": header[1],
               "sys_info": header[2], "storage_keys_sorted": list(order) == sorted(order)}
    proto, globals_seen = _globals_of(pkl)
    for s in storages:
        s["dtype"] = str(storage_dtype(s["type"])).removeprefix("torch.")
    return {**fmt, "pickle_protocol": proto, "globals": globals_seen, "storages": storages, "tree": _node(obj),
            "summary": summarize(obj, storages)}


def _tensors(obj: Any, path: str = "") -> list[tuple[str, _Tensor]]:
    if isinstance(obj, _Tensor):
        return [(path, obj)]
    if isinstance(obj, dict):
        return [t for k, v in obj.items() for t in _tensors(v, f"{path}/{k}")]
    if isinstance(obj, (list, tuple)):
        return [t for i, v in enumerate(obj) for t in _tensors(v, f"{path}/{i}")]
    return []


def summarize(obj: Any, storages: list[dict]) -> dict:
    """Counts a reader checks first: top-level keys, tensors, key prefixes of the largest dict, dtypes, bytes."""
    top = list(obj) if isinstance(obj, dict) else []
    dicts = [obj] + ([v for v in obj.values() if isinstance(v, dict)] if isinstance(obj, dict) else [])
    biggest = max(dicts, key=len) if dicts else {}
    prefixes: dict[str, int] = {}
    for k in biggest:
        head = ".".join(str(k).split(".")[:2]) + "." if "." in str(k) else str(k)
        prefixes[head] = prefixes.get(head, 0) + 1
    dtypes: dict[str, int] = {}
    for _, t in _tensors(obj):
        d = storages[t.storage.index]["dtype"]
        dtypes[d] = dtypes.get(d, 0) + 1
    size = sum(s["numel"] * torch.empty(0, dtype=storage_dtype(s["type"])).element_size() for s in storages)
    return {"top_level_keys": [str(k) for k in top], "tensors": len(_tensors(obj)), "storages": len(storages),
            "state_dict_keys": len(biggest), "key_prefixes": prefixes, "tensor_dtypes": dtypes, "bytes": size}


# --- writing: a random-weight file in a manifest's layout -------------------------------------------------

class StorageRef:
    """A storage to write: its class (dotted name, e.g. ``torch.cuda.FloatStorage``), location tag, key and
    data (a flat CPU tensor of the storage's dtype)."""

    def __init__(self, type_name: str, location: str, key: str, data: torch.Tensor):
        self.type_name, self.location, self.key, self.data = type_name, location, key, data


class TensorRef:
    """A tensor pickled as torch 1.1 pickles one: ``_rebuild_tensor_v2(storage, offset, size, stride,
    requires_grad, OrderedDict())``."""

    def __init__(self, storage: StorageRef, offset: int, size, stride, requires_grad: bool = False):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)
        self.requires_grad = requires_grad

    def __reduce_ex__(self, proto):
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, self.offset, self.size, self.stride, self.requires_grad, OrderedDict()))


def _storage_class(type_name: str):
    module, name = type_name.rsplit(".", 1)
    return getattr(sys.modules[module] if module in sys.modules else torch, name)


def legacy_save(obj: Any, f, *, pickle_module=pickle, protocol: int = 2) -> None:
    """torch 1.1's ``torch.save`` (legacy format): magic number, protocol version and sys_info pickles, the
    object's pickle whose storages are persistent ids ``('storage', <storage class>, key, location, size, None)``,
    the sorted storage keys, then each storage as its element count (int64) and raw bytes. ``obj`` holds
    :class:`TensorRef` leaves; ``pickle_module`` is what upstream passed (``dill`` for MadryLab robustness)."""
    stored: dict[str, StorageRef] = {}

    def persistent_id(o):
        if isinstance(o, StorageRef):
            stored[o.key] = o
            return ("storage", _storage_class(o.type_name), o.key, o.location, o.data.numel(), None)
        return None

    pickle_module.dump(MAGIC_NUMBER, f, protocol=protocol)
    pickle_module.dump(PROTOCOL_VERSION, f, protocol=protocol)
    pickle_module.dump(SYS_INFO, f, protocol=protocol)
    pickler = pickle_module.Pickler(f, protocol=protocol)
    pickler.persistent_id = persistent_id
    pickler.dump(obj)
    keys = sorted(stored)
    pickle_module.dump(keys, f, protocol=protocol)
    f.flush()
    for key in keys:
        data = stored[key].data.contiguous()
        f.write(struct.pack("<q", data.numel()))
        f.write(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")


def _random_storage(s: dict, gen: torch.Generator, positive: bool) -> torch.Tensor:
    dtype = storage_dtype(s["type"])
    if dtype.is_floating_point:
        x = torch.randn(s["numel"], generator=gen) * 0.05
        return (x.abs() + 0.5 if positive else x).to(dtype)
    return torch.randint(0, 100, (s["numel"],), generator=gen).to(dtype)


def _positive_storages(node: dict, key: str = "") -> set[int]:
    """Storages of variances and standard deviations (they must stay positive in random weights)."""
    if node["type"] == "tensor":
        return {node["storage"]} if key.rsplit(".", 1)[-1] in ("running_var", "new_std", "std", "sigma") else set()
    out: set[int] = set()
    for item in node.get("items", []):
        out |= _positive_storages(item[1], str(item[0])) if node["type"] in ("dict", "OrderedDict") else \
            _positive_storages(item, key)
    return out


def _build(node: dict, leaf) -> Any:
    t = node["type"]
    if t == "tensor":
        return leaf(node)
    if t in ("dict", "OrderedDict"):
        out = (OrderedDict if t == "OrderedDict" else dict)((k, _build(v, leaf)) for k, v in node["items"])
        for k, v in node.get("attrs", {}).items():
            setattr(out, k, _build(v, leaf))
        return out
    if t in ("list", "tuple"):
        items = [_build(v, leaf) for v in node["items"]]
        return items if t == "list" else tuple(items)
    if t == "object":
        raise ValueError(f"cannot rebuild an object of {node['global']} from a manifest")
    return node["value"]


def write_from_manifest(manifest: dict, path: str | Path, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Write a random-weight file in ``manifest``'s layout (format, protocol, storage types and locations,
    structure, sharing of storages); returns every tensor written, by its path in the tree (``/model/key``)."""
    gen = torch.Generator().manual_seed(seed)
    positive = _positive_storages(manifest["tree"])
    data = [_random_storage(s, gen, i in positive) for i, s in enumerate(manifest["storages"])]
    written: dict[str, torch.Tensor] = {}
    if manifest["format"] == "legacy":
        refs = [StorageRef(s["type"], s["location"], str(140000000000000 + 4096 * i), data[i])
                for i, s in enumerate(manifest["storages"])]

        def leaf(n: dict) -> Any:
            return TensorRef(refs[n["storage"]], n["offset"], n["shape"], n["stride"], n["requires_grad"])

        obj = _build(manifest["tree"], leaf)
        with open(path, "wb") as f:
            legacy_save(obj, f, protocol=manifest["pickle_protocol"])
    else:
        if any(s["location"] != "cpu" for s in manifest["storages"]):
            raise ValueError("zip manifests with non-CPU storages are not rebuilt here")

        def leaf(n: dict) -> Any:
            return data[n["storage"]].as_strided(n["shape"], n["stride"], n["offset"])

        obj = _build(manifest["tree"], leaf)
        torch.save(obj, path, pickle_protocol=manifest["pickle_protocol"])
    for p, t in _tensors_built(manifest["tree"], data):
        written[p] = t
    return written


def _tensors_built(node: dict, data: list[torch.Tensor], path: str = "") -> list[tuple[str, torch.Tensor]]:
    if node["type"] == "tensor":
        return [(path, data[node["storage"]].as_strided(node["shape"], node["stride"], node["offset"]))]
    if node["type"] in ("dict", "OrderedDict"):
        return [t for k, v in node["items"] for t in _tensors_built(v, data, f"{path}/{k}")]
    if node["type"] in ("list", "tuple"):
        return [t for i, v in enumerate(node["items"]) for t in _tensors_built(v, data, f"{path}/{i}")]
    return []


def layout_only(manifest: dict) -> dict:
    """The parts of a manifest that describe the layout (what a rebuilt file must reproduce)."""
    return {k: manifest[k] for k in ("format", "pickle_protocol", "globals", "storages", "tree", "summary")}
