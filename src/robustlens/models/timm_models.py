"""Any timm model (``timm:NAME``) when timm is installed."""

from __future__ import annotations

from typing import Any, cast

from robustlens.errors import UserError
from robustlens.models._registry import seeded_init
from robustlens.models.checkpoints import load_weights
from robustlens.models.classifier import Classifier
from robustlens.models.preprocess import PreprocessConfig


def timm_available() -> bool:
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def build_timm(name: str, weights: str, seed: int) -> Classifier:
    import timm

    if weights == "imagenet":
        try:
            net = timm.create_model(name, pretrained=True)
        except Exception as e:
            from huggingface_hub.constants import HF_HUB_CACHE

            raise UserError(f"cannot get timm {name} pretrained weights offline ({type(e).__name__}): put the "
                            f"model's Hugging Face hub snapshot under {HF_HUB_CACHE}") from None
    else:
        net = seeded_init(seed, lambda: timm.create_model(name, pretrained=False))
        if weights != "none":
            load_weights(net, weights)
    cfg = cast(dict[str, Any], net.pretrained_cfg)
    config = PreprocessConfig.from_crop_pct(cfg["input_size"][-1], cfg.get("crop_pct", 0.875),
                                            interpolation=cfg.get("interpolation", "bicubic"),
                                            mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    return Classifier(net.eval(), config, name=f"timm:{name}", weights=weights,
                      num_classes=getattr(net, "num_classes", 1000))


def timm_has(name: str) -> bool:
    import timm

    return name in timm.list_models()
