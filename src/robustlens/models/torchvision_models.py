"""Any torchvision classification model by name; pretrained weights from the torch hub cache."""

from __future__ import annotations

from dataclasses import replace

from robustlens.models._registry import seeded_init
from robustlens.models.checkpoints import load_into, load_weights, read_state_dict
from robustlens.models.classifier import Classifier
from robustlens.models.hub import fetch_to_hub_cache
from robustlens.models.preprocess import PreprocessConfig


def torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def build_torchvision(name: str, weights: str, seed: int) -> Classifier:
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
        net = seeded_init(seed, lambda: tvm.get_model(name, weights=None))
        weights_desc = weights if weights != "none" else f"none (random init, seed {seed})"
        if weights != "none":
            info = load_weights(net, weights)  # detects MadryLab/RobustBench layouts
            if info.mean is not None and info.std is not None:
                config = replace(config, mean=info.mean, std=info.std)
    return Classifier(net.eval(), config, name=name, weights=weights_desc)
