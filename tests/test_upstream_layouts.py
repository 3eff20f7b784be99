"""The upstream checkpoint layouts under test: for every manifest in tests/data/upstream (made by
scripts/upstream_manifests.py from files the upstream code wrote: MadryLab robustness@bc3a982 with dill and torch
1.1's legacy format, RobustBench's classes and wrappings, torchvision), a random-weight file is written in that
exact layout, then loaded through the public path (the file in a torch hub cache, ``create_model(entry)``); every
tensor of the network must arrive unchanged. The restricted unpickler builds exactly the globals the manifests
use and never runs anything else."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from upstream_layout import layout_only, read_layout, storage_dtype, write_from_manifest

from robustlens.errors import UserError
from robustlens.models import create_model, foreign
from robustlens.models.published import published

MANIFEST_DIR = Path(__file__).parent / "data" / "upstream"
MANIFESTS = sorted(MANIFEST_DIR.glob("*.json"))
ENTRIES = {"madry_l2_3", "madry_linf_4", "madry_linf_8", "Salman2020Do_R50", "Carmon2019Unlabeled", "Wong2020Fast",
           "torchvision_resnet50"}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_the_manifests_cover_every_published_entry_and_torchvision():
    entries = {load(p)["entry"] for p in MANIFESTS}
    assert entries == ENTRIES
    formats = {(load(p)["format"], d) for p in MANIFESTS for d in load(p)["summary"]["tensor_dtypes"]}
    assert {("legacy", "float32"), ("legacy", "float16"), ("zip", "float32"), ("zip", "float16")} <= formats


def test_madry_manifests_hold_what_upstream_wrote():
    for name in ("madry_l2_3", "madry_linf_4", "madry_linf_8"):
        m = load(MANIFEST_DIR / f"{name}.json")
        assert m["format"] == "legacy" and m["pickle_protocol"] == 2 and m["protocol_version"] == 1001
        assert m["summary"]["top_level_keys"] == ["model", "optimizer", "schedule", "epoch"]
        assert m["summary"]["state_dict_keys"] == 644
        assert set(m["summary"]["key_prefixes"]) == {"module.model.", "module.attacker.", "module.normalizer."}
        assert {s["type"] for s in m["storages"]} == {"torch.cuda.FloatStorage", "torch.cuda.LongStorage"}
        assert {s["location"] for s in m["storages"]} == {"cuda:0"}


def _home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ROBUSTLENS_OFFLINE", "1")
    ck = tmp_path / "torch" / "hub" / "checkpoints"
    ck.mkdir(parents=True)
    return ck


def _cache_name(entry: str) -> str:
    if entry == "torchvision_resnet50":
        import torchvision

        return os.path.basename(torchvision.models.ResNet50_Weights.DEFAULT.url)
    return published(entry).filename


NETWORK_PATHS = ("/model/module.model.", "/state_dict/module.", "/state_dict/", "/module.", "/")


def _network_tensor(written: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """The written tensor the network's ``key`` must come from: where the upstream code keeps the network
    (MadryLab: ``model`` → ``module.model.``, never the attacker's copy; RobustBench: ``state_dict`` →
    ``module.``, or the top level)."""
    hits = [prefix + key for prefix in NETWORK_PATHS if prefix + key in written]
    assert len(hits) == 1, (key, hits)
    return written[hits[0]]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_a_file_in_each_upstream_layout_loads_through_the_public_path(manifest, tmp_path, monkeypatch):
    m = load(manifest)
    ck = _home(tmp_path, monkeypatch)
    path = ck / _cache_name(m["entry"])
    written = write_from_manifest(m, path, seed=1)
    assert layout_only(read_layout(path)) == layout_only(m)  # the rebuilt file really has the upstream layout
    model = create_model("resnet50" if m["entry"] == "torchvision_resnet50" else m["entry"])
    state = model.net.state_dict()
    for key, got in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        want = _network_tensor(written, key)
        assert torch.equal(got, want.to(got.dtype)), key
    size = model.config.input_size
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, model.num_classes) and torch.isfinite(logits).all()
    if m["entry"] != "torchvision_resnet50" and published(m["entry"]).arch == "resnet50":
        import torchvision  # the same tensors in torchvision's ResNet-50, normalised by hand

        ref = torchvision.models.resnet50().eval()
        ref.load_state_dict({k: _network_tensor(written, k).float() for k in ref.state_dict()
                             if not k.endswith("num_batches_tracked")}, strict=False)
        mean, std = torch.tensor(model.config.mean).view(1, 3, 1, 1), torch.tensor(model.config.std).view(1, 3, 1, 1)
        with torch.no_grad():
            assert (logits - ref((x - mean) / std)).abs().max() <= 1e-4 * (1 + logits.abs().max())


def test_the_restricted_unpickler_builds_exactly_the_globals_the_manifests_use():
    used = {g for p in MANIFESTS for g in load(p)["globals"]}
    storages = {g for g in used if g.rsplit(".", 1)[-1].endswith("Storage")}
    for g in storages:  # torch resolves storage classes itself, before the unpickler is asked
        storage_dtype(g)
    assert used - storages == {f"{m}.{n}" for m, n in foreign._ALLOWED_GLOBALS}


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CodeGlobal:
    """Pickles as a call of the named global (how dill writes functions and code objects)."""

    def __init__(self, module: str, name: str, marker: Path):
        self.module, self.name, self.marker = module, name, marker

    def __reduce__(self):
        import importlib

        return (getattr(importlib.import_module(self.module), self.name), (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.parametrize("legacy", [True, False])
def test_code_in_an_upstream_layout_is_never_run(tmp_path, legacy):
    """The madry manifest's layout with a schedule that would run code: it loads, and nothing runs."""
    m = load(MANIFEST_DIR / "madry_l2_3.json")
    small = dict(m)
    items = [it for it in m["tree"]["items"] if it[0] != "optimizer"]
    small["tree"] = {**m["tree"], "items": items}
    path = tmp_path / "ckpt.pt"
    write_from_manifest(small, path)
    obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=foreign._restricted_pickle_module())
    assert set(obj) == {"model", "schedule", "epoch"}
    marker = tmp_path / "ran"
    payloads = {"model": obj["model"], "schedule": [_Evil(marker), _CodeGlobal("builtins", "eval", marker),
                                                    _CodeGlobal("builtins", "exec", marker)], "epoch": 90}
    evil = tmp_path / "evil.pt"
    torch.save(payloads, evil, _use_new_zipfile_serialization=not legacy, pickle_protocol=2)
    state = foreign.read_foreign_checkpoint(evil)
    assert not marker.exists()
    assert len(state) == 644
    with pytest.raises(UserError, match="refused: the pickle would run code"):
        from robustlens.models.checkpoints import read_state_dict

        read_state_dict(evil)
    assert not marker.exists()


def test_a_pickle_of_only_code_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "code.pt"
    path.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(UserError) as e:
        foreign.read_foreign_checkpoint(path)
    assert "\n" not in str(e.value) and not marker.exists()
