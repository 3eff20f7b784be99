"""``create_model`` and ``list_models``: a registered name, any torchvision classification model, or ``timm:NAME``.

Weights: ``"imagenet"`` (the model's pretrained weights), ``"none"`` (random init, seeded), or a path to a state
dict / safetensors file.
"""

from __future__ import annotations

from robustlens.models._registry import entries
from robustlens.models.architecture import build_architecture
from robustlens.models.classifier import Classifier
from robustlens.models.published import load_published, published
from robustlens.models.torchvision_models import torchvision_names

DEFAULT_MODEL = "efficientnet_lite0"
"""The model every command and function uses when none is named: the bundled ImageNet EfficientNet-Lite0."""
# The robust model of Problem 4(e)(f), the comparisons and synthesis; its standard counterpart is
# robustlens.models.counterparts.standard_for(DEFAULT_ROBUST_MODEL).
DEFAULT_ROBUST_MODEL = "imagenette128_resnet18_robust"
"""The robust model of Problem 4(e)(f), the comparisons and synthesis (an L2 adversarially trained ResNet)."""


def list_models(include_torchvision: bool = True) -> list[dict]:
    """Registered models, then torchvision classification models (and a note on timm)."""
    rows = [{"name": e.name, "source": "published" if published(e.name) else "robustlens",
             "description": e.description, "default_weights": e.default_weights} for e in entries()]
    if include_torchvision:
        rows += [{"name": n, "source": "torchvision", "description": "torchvision classification model",
                  "default_weights": "imagenet"} for n in torchvision_names()]
    return rows


def create_model(name: str = DEFAULT_MODEL, weights: str | None = None, *, seed: int = 0) -> Classifier:
    """A :class:`Classifier` in eval mode by registry name, torchvision name or ``timm:NAME``.

    ``weights``: ``"imagenet"``, ``"none"`` (random init with ``seed``), a file path or a published checkpoint
    name (``madry_l2_3``, see :mod:`robustlens.models.published`; downloaded once); default: the model's
    default (ImageNet weights for ImageNet models; the checkpoint itself for a published name).
    """
    key = name.strip()
    if weights is not None and published(weights) is not None:
        return load_published(weights, arch=None if key == weights else key)
    return build_architecture(key, weights, seed)
