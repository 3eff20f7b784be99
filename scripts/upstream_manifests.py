"""Build checkpoint files the way the upstream code writes them, extract their layout manifests (no weights) into
tests/data/upstream/, and measure robustlens's logits against the upstream model on each file.

Needs checkouts in a git-ignored folder (never committed): MadryLab/robustness at bc3a982 (the commit whose README
published imagenet_l2_3_0.pt, imagenet_linf_4.pt, imagenet_linf_8.pt), RobustBench/robustbench, and dill 0.2.9's
sdist (pure Python; it imports on Python 3.11)::

    .upstream/robustness-bc3a982/   git --git-dir=<mirror> archive --prefix=robustness-bc3a982/ bc3a982 | tar -x
    .upstream/robustbench/          git --git-dir=<mirror> archive --prefix=robustbench/ HEAD | tar -x
    .upstream/dill-0.2.9/           pip download --no-deps dill==0.2.9; tar xzf dill-0.2.9.tar.gz

    python scripts/upstream_manifests.py --upstream .upstream --work /tmp/upstream_files

How each file is made (also written into each manifest's ``produced_by``):

- MadryLab (3 entries): robustness@bc3a982's ``AttackerModel(resnet50(), ImageNet)`` in ``nn.DataParallel``, its
  SGD (lr 0.1, momentum 0.9, weight decay 1e-4) after one real training step, its ``StepLR(step_size=50)``, and
  its save line ``ch.save({'model', 'optimizer', 'schedule', 'epoch'}, path, pickle_module=dill)`` with dill 0.2.9.
  torch 1.1 cannot be installed here (no wheel for Python 3.11), so ``ch.save`` is torch 1.1's legacy ``_save``
  re-written in ``tests/upstream_layout.py`` (magic number, protocol 1001, sys_info, pickle protocol 2, storages
  as persistent ids with ``torch.cuda.*Storage`` and location ``cuda:0`` as a GPU run writes them, sorted keys,
  raw storages) and the optimizer/schedule state dicts are put in torch 1.1's form (parameter ids as keys; 1.1's
  field names).
- RobustBench (3 entries): the network from RobustBench's own classes (``normalize_model``/torchvision ResNet-50,
  ``WideResNet(28, 10, sub_block1=True)``, ``Wong2020FastNet``) saved in two of the wrappings its ``load_model``
  reads (a plain state dict, or ``{'state_dict': ...}`` with DataParallel's ``module.``), in fp32 and fp16 (apex
  O2 for Wong2020Fast: fp16 except BatchNorm), in zip format (``torch.save``) and torch 1.1's legacy format.
- torchvision ResNet-50: ``torch.save(resnet50().state_dict())`` (zip), the file torchvision's weights API reads.

``--compare`` loads every file through robustlens (the file put in a temporary torch hub cache, downloads off) and
through the upstream code (MadryLab: the lines of ``make_and_restore_model`` with ``ch.load(pickle_module=dill)``;
RobustBench: ``robustbench.utils.load_model``; torchvision: ``load_state_dict``) and reports the max |logit
difference| on 4 random images into docs/results/upstream_logits.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from upstream_layout import StorageRef, TensorRef, legacy_save, read_layout  # noqa: E402

MANIFESTS = ROOT / "tests" / "data" / "upstream"
MADRY = {"madry_l2_3": "imagenet_l2_3_0.pt", "madry_linf_4": "imagenet_linf_4.pt",
         "madry_linf_8": "imagenet_linf_8.pt"}


def randomize(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and BatchNorm statistics (so the statistics matter in the logits)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                elif name.endswith(("running_mean", "bias")):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
                elif name.endswith("weight") and t.dim() == 1:
                    t.copy_(torch.rand(t.shape, generator=g) * 0.3 + 0.1)
    return net.eval()


def as_legacy_tree(obj, location: str, cache: dict):
    """Tensors -> :class:`TensorRef` on :class:`StorageRef` with torch 1.1's storage class for ``location``
    (``torch.cuda.FloatStorage`` for cuda:0); shared storages stay shared; OrderedDict ``_metadata`` kept."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        key = t.untyped_storage().data_ptr()
        if key not in cache:
            flat = torch.empty(0, dtype=t.dtype).set_(t.untyped_storage(), 0,
                                                      (t.untyped_storage().nbytes() // t.element_size(),))
            kind = {torch.float32: "Float", torch.float16: "Half", torch.int64: "Long"}[t.dtype]
            module = "torch.cuda" if location.startswith("cuda") else "torch"
            cache[key] = StorageRef(f"{module}.{kind}Storage", location, str(94000000000000 + 64 * len(cache)),
                                    flat.clone())
        return TensorRef(cache[key], t.storage_offset(), t.shape, t.stride(), False)
    if isinstance(obj, dict):
        out = type(obj)((k, as_legacy_tree(v, location, cache)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(as_legacy_tree(v, location, cache) for v in obj)
    return obj


def save_legacy(obj, path: Path, *, pickle_module, location: str = "cuda:0") -> None:
    with open(path, "wb") as f:
        legacy_save(as_legacy_tree(obj, location, {}), f, pickle_module=pickle_module, protocol=2)


# --- MadryLab robustness@bc3a982 ---------------------------------------------------------------------------

def madry_modules(upstream: Path):
    sys.path.insert(0, str(upstream / "robustness-bc3a982"))
    sys.path.insert(0, str(upstream / "dill-0.2.9"))
    if "cox" not in sys.modules:  # robustness/tools/constants.py imports MadryLab's cox only for a log-store
        import types  # schema (store.PYTORCH_STATE); nothing on the model or save path uses it

        cox = types.ModuleType("cox")
        cox.store = types.SimpleNamespace(PYTORCH_STATE="PYTORCH_STATE")  # type: ignore[attr-defined]
        sys.modules["cox"], sys.modules["cox.store"] = cox, cox.store  # type: ignore[assignment]
        tv_utils = types.ModuleType("torchvision.models.utils")  # torchvision < 0.13's home of this function
        tv_utils.load_state_dict_from_url = torch.hub.load_state_dict_from_url  # type: ignore[attr-defined]
        sys.modules["torchvision.models.utils"] = tv_utils
    import dill
    from robustness import attacker, datasets, imagenet_models

    assert dill.__version__ == "0.2.9", dill.__version__
    return dill, attacker, datasets, imagenet_models


def torch11_optimizer_state(opt: torch.optim.SGD) -> dict:
    """SGD.state_dict() as torch 1.1 wrote it: parameters named by id(), 1.1's group fields only."""
    ids = {i: id(p) for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    sd = opt.state_dict()
    state = {ids[i]: {"momentum_buffer": s["momentum_buffer"]} for i, s in sd["state"].items()}
    groups = [{k: g[k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov")} |
              {"params": [ids[i] for i in g["params"]]} for g in sd["param_groups"]]
    return {"state": state, "param_groups": groups}


def build_madry(name: str, work: Path, upstream: Path, seed: int) -> Path:
    dill, attacker, datasets, imagenet_models = madry_modules(upstream)
    torch.manual_seed(seed)
    net = randomize(imagenet_models.resnet50(), seed)
    model = torch.nn.DataParallel(attacker.AttackerModel(net, datasets.ImageNet("/nonexistent")))
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=50)
    model.train()
    out, _ = model(torch.rand(2, 3, 224, 224), torch.tensor([1, 2]))
    torch.nn.functional.cross_entropy(out, torch.tensor([1, 2])).backward()
    opt.step()
    randomize(net, seed + 1)  # eval-time statistics after the step
    # StepLR.state_dict() with torch 1.1's fields, at the last of 90 epochs
    sched = {"step_size": schedule.step_size, "gamma": schedule.gamma, "base_lrs": list(schedule.base_lrs),
             "last_epoch": 89, "_step_count": 90}
    sd_info = {"model": model.state_dict(), "optimizer": torch11_optimizer_state(opt), "schedule": sched,
               "epoch": 90}
    path = work / MADRY[name]
    save_legacy(sd_info, path, pickle_module=dill)
    return path


def madry_upstream_logits(path: Path, upstream: Path, x: torch.Tensor) -> torch.Tensor:
    """make_and_restore_model's loading lines (robustness@bc3a982, model_utils.py), on the CPU."""
    _, attacker, datasets, imagenet_models = madry_modules(upstream)
    model = attacker.AttackerModel(imagenet_models.resnet50(), datasets.ImageNet("/nonexistent"))
    import pickle

    # upstream: ch.load(resume_path, pickle_module=dill); this torch refuses dill < 0.3.1 and passes encoding=,
    # which dill 0.2.9's load() does not take, so the stdlib pickle (what dill's Unpickler extends) reads it
    checkpoint = torch.load(path, pickle_module=pickle, map_location="cpu", weights_only=False)
    sd = checkpoint["model"]
    sd = {k[len("module."):]: v for k, v in sd.items()}
    model.load_state_dict(sd)
    with torch.no_grad():
        return model.eval()(x)[0]


# --- RobustBench ----------------------------------------------------------------------------------------------

RB = {  # variant id: (entry, RobustBench dataset, format, dtype, wrapping, how)
    "Salman2020Do_R50__zip_fp32_plain": ("Salman2020Do_R50", "imagenet", "zip", "fp32", "plain"),
    "Salman2020Do_R50__legacy_fp16_state_dict_module": ("Salman2020Do_R50", "imagenet", "legacy", "fp16",
                                                         "state_dict_module"),
    "Carmon2019Unlabeled__legacy_fp32_state_dict_module": ("Carmon2019Unlabeled", "cifar10", "legacy", "fp32",
                                                           "state_dict_module"),
    "Carmon2019Unlabeled__zip_fp16_plain": ("Carmon2019Unlabeled", "cifar10", "zip", "fp16", "plain"),
    "Wong2020Fast__legacy_ampO2_plain": ("Wong2020Fast", "cifar10", "legacy", "ampO2", "plain_no_mu_sigma"),
    "Wong2020Fast__zip_fp32_robustbench_class": ("Wong2020Fast", "cifar10", "zip", "fp32", "plain"),
}


RB_OPTIONAL = ("geotorch", "torchdiffeq", "autoattack", "gdown", "pkg_resources")  # imported by RobustBench elsewhere


class _OptionalStub:
    """Import stand-ins for RobustBench's dependencies that none of these three entries uses (geotorch and
    torchdiffeq for SODEF models, autoattack for evaluation, gdown for downloads, pkg_resources in its data
    loaders; not installed here)."""

    def find_spec(self, name, path=None, target=None):
        import importlib.machinery

        if name.split(".")[0] in RB_OPTIONAL:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        import types

        class Stub(types.ModuleType):
            def __getattr__(self, attr):
                if attr.startswith("__"):
                    raise AttributeError(attr)
                return type(attr, (), {})

        mod = Stub(spec.name)
        mod.__path__ = []  # type: ignore[attr-defined]
        return mod

    def exec_module(self, module):
        pass


def robustbench_path(upstream: Path) -> None:
    if str(upstream / "robustbench") not in sys.path:
        sys.path.insert(0, str(upstream / "robustbench"))
        sys.meta_path.append(_OptionalStub())


def robustbench_net(entry: str, upstream: Path) -> torch.nn.Module:
    """The network RobustBench's load_model fills for ``entry`` (what the file holds)."""
    robustbench_path(upstream)
    from robustbench.model_zoo import cifar10, imagenet
    from robustbench.model_zoo.enums import ThreatModel

    zoo = (imagenet.imagenet_models if entry == "Salman2020Do_R50" else cifar10.cifar_10_models)[ThreatModel.Linf]
    model = zoo[entry]["model"]()
    return model.model if entry == "Salman2020Do_R50" else model  # RobustBench adds 'model.' for ImageNet


def build_robustbench(variant: str, work: Path, upstream: Path, seed: int) -> Path:
    import pickle

    entry, _, fmt, dtype, wrap = RB[variant]
    torch.manual_seed(seed)
    net = randomize(robustbench_net(entry, upstream), seed)
    if dtype == "fp16":
        net = net.half()
    elif dtype == "ampO2":  # apex amp O2 (fast_adversarial's default): fp16 except BatchNorm
        net = net.half()
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.float()
    sd = net.state_dict()
    if wrap == "plain_no_mu_sigma":  # fast_adversarial's PreActResNet18 has no mu/sigma buffers
        sd = OrderedDict((k, v) for k, v in sd.items() if k not in ("mu", "sigma"))
    obj = {"state_dict": OrderedDict((f"module.{k}", v) for k, v in sd.items())} if wrap == "state_dict_module" else sd
    path = work / f"{variant}.pt"
    if fmt == "zip":
        torch.save(obj, path)
    else:
        save_legacy(obj, path, pickle_module=pickle)
    return path


def robustbench_upstream_logits(variant: str, path: Path, upstream: Path, x: torch.Tensor, tmp: Path):
    robustbench_path(upstream)
    from robustbench.utils import load_model

    entry, dataset = RB[variant][:2]
    folder = tmp / "rb" / variant / dataset / "Linf"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{entry}.pt"
    target.unlink(missing_ok=True)
    os.symlink(path, target)
    model = load_model(entry, model_dir=tmp / "rb" / variant, dataset=dataset, threat_model="Linf")
    with torch.no_grad():
        return model.float().eval()(x)


# --- torchvision ---------------------------------------------------------------------------------------------

def torchvision_file() -> str:
    import torchvision.models as tvm

    return os.path.basename(tvm.ResNet50_Weights.DEFAULT.url)


def build_torchvision(work: Path, seed: int) -> Path:
    import torchvision.models as tvm

    torch.manual_seed(seed)
    path = work / torchvision_file()
    torch.save(randomize(tvm.resnet50(), seed).state_dict(), path)
    return path


# --- robustlens on the same files ----------------------------------------------------------------------------

def robustlens_logits(entry: str, path: Path, x: torch.Tensor, tmp: Path) -> torch.Tensor:
    """robustlens's public path: the file in a fresh torch hub cache under the entry's file name, offline."""
    import shutil

    home = tmp / "home" / path.stem
    shutil.rmtree(home, ignore_errors=True)  # a fresh cache: no conversion left from an earlier run
    ck = home / "hub" / "checkpoints"
    ck.mkdir(parents=True, exist_ok=True)
    os.environ["TORCH_HOME"], os.environ["ROBUSTLENS_OFFLINE"] = str(home), "1"
    from robustlens.models import create_model
    from robustlens.models.published import published

    if entry == "torchvision_resnet50":
        (ck / torchvision_file()).unlink(missing_ok=True)
        os.symlink(path, ck / torchvision_file())
        model = create_model("resnet50")
    else:
        name = published(entry).filename
        (ck / name).unlink(missing_ok=True)
        os.symlink(path, ck / name)
        model = create_model(entry)
    with torch.no_grad():
        return model(x)


def manifest_of(path: Path, entry: str, variant: str, how: str) -> dict:
    m = read_layout(path)
    return {"entry": entry, "variant": variant, "produced_by": how, "bytes": path.stat().st_size, **m}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", type=Path, default=ROOT / ".upstream")
    ap.add_argument("--work", type=Path, default=Path("/tmp/upstream_files"))
    ap.add_argument("--compare", action="store_true", help="also measure logits against the upstream models")
    ap.add_argument("--only", default="", help="comma-separated variant ids")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    args.work.mkdir(parents=True, exist_ok=True)
    MANIFESTS.mkdir(parents=True, exist_ok=True)
    madry_how = ("robustness@bc3a982 AttackerModel(resnet50) in DataParallel, SGD+StepLR after one step, saved by "
                 "its train.py save line with dill 0.2.9 through torch 1.1's legacy _save (re-written: torch 1.1 "
                 "is not installable on Python 3.11), CUDA storage tags as a GPU run writes them")
    jobs: list[tuple[str, str, str]] = [(n, n, madry_how) for n in MADRY]
    jobs += [(v, RB[v][0], f"RobustBench class of {RB[v][0]}, {RB[v][2]} format, {RB[v][3]}, wrapping {RB[v][4]}"
              + (" (torch 1.1 legacy _save re-written, pickle, CUDA tags)" if RB[v][2] == "legacy" else
                 " (torch.save, this torch)")) for v in RB]
    jobs.append(("torchvision_resnet50", "torchvision_resnet50",
                 "torch.save(torchvision resnet50().state_dict()) (zip, this torch), named as torchvision's file"))
    only = set(filter(None, args.only.split(",")))
    results = []
    for i, (variant, entry, how) in enumerate(jobs):
        if only and variant not in only:
            continue
        t = time.perf_counter()
        if variant in MADRY:
            path = build_madry(variant, args.work, args.upstream, seed=i)
        elif variant in RB:
            path = build_robustbench(variant, args.work, args.upstream, seed=i)
        else:
            path = build_torchvision(args.work, seed=i)
        manifest = manifest_of(path, entry, variant, how)
        (MANIFESTS / f"{variant}.json").write_text(json.dumps(manifest, separators=(",", ":")) + "\n")
        row = {"variant": variant, "entry": entry, "file": path.name, "bytes": path.stat().st_size,
               "format": manifest["format"], "summary": manifest["summary"], "globals": manifest["globals"]}
        if args.compare:
            size = 224 if RB.get(variant, ("", "imagenet"))[1] == "imagenet" else 32
            x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0))
            if variant in MADRY:
                want = madry_upstream_logits(path, args.upstream, x)
            elif variant in RB:
                want = robustbench_upstream_logits(variant, path, args.upstream, x, args.work)
            else:
                import torchvision

                ref = torchvision.models.resnet50()
                ref.load_state_dict(torch.load(path, weights_only=True))
                mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
                std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
                with torch.no_grad():
                    want = ref.eval()((x - mean) / std)
            got = robustlens_logits(entry, path, x, args.work)
            row |= {"max_abs_logit_diff": float((got - want).abs().max()),
                    "max_abs_logit": float(want.abs().max()), "same_top1": bool((got.argmax(1) == want.argmax(1))
                                                                                .all())}
        row["seconds"] = round(time.perf_counter() - t, 1)
        print(json.dumps({k: v for k, v in row.items() if k != "summary"}), flush=True)
        results.append(row)
    if args.compare and not only:
        out = ROOT / "docs" / "results" / "upstream_logits.json"
        out.write_text(json.dumps({"torch": torch.__version__, "rows": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
