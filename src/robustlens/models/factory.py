"""``create_model`` and ``list_models``: a registered name, any torchvision classification model, or ``timm:NAME``.

Weights: ``"imagenet"`` (the model's pretrained weights), ``"none"`` (random init, seeded), or a path to a state
dict / safetensors file.
"""

from __future__ import annotations

from robustlens.errors import UserError, unknown
from robustlens.models._registry import entries, registered
from robustlens.models.checkpoints import is_weights_spec
from robustlens.models.classifier import Classifier
from robustlens.models.published import load_published, published
from robustlens.models.timm_models import build_timm, timm_available, timm_has
from robustlens.models.torchvision_models import build_torchvision, torchvision_names

DEFAULT_MODEL = "efficientnet_lite0"
# The robust model of Problem 4(e)(f), the comparisons and synthesis; its standard counterpart is
# robustlens.models.counterparts.standard_for(DEFAULT_ROBUST_MODEL).
DEFAULT_ROBUST_MODEL = "imagenette128_resnet_robust"


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
    entry = registered(key)
    if entry is not None:
        return entry.builder(weights or entry.default_weights, seed).eval()
    weights = weights or "imagenet"
    if weights not in ("imagenet", "none") and not is_weights_spec(weights):
        raise UserError(f"weights must be 'imagenet', 'none', an existing file or a published checkpoint "
                        f"(robustlens models --published); {weights!r} is none of these")
    if key.startswith("timm:") or (key not in torchvision_names() and timm_available() and timm_has(key)):
        if not timm_available():
            raise UserError("timm models need the package timm (pip install 'robustlens[timm]')")
        bare = key.removeprefix("timm:")
        if not timm_has(bare):
            import timm

            raise unknown("timm model", bare, timm.list_models())
        return build_timm(bare, weights, seed).eval()
    if key in torchvision_names():
        return build_torchvision(key, weights, seed).eval()
    raise unknown("model", key, [*(e.name for e in entries()), *torchvision_names()])
