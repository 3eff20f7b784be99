"""Building a model by architecture name: a registered name, any torchvision classification model, or
``timm:NAME``, with weights ``"imagenet"``, ``"none"`` (random init, seeded) or a file. It knows nothing of the
published checkpoints, so :mod:`~robustlens.models.published` and :mod:`~robustlens.models.factory` both build
through it and neither imports the other in both directions."""

from __future__ import annotations

from robustlens.errors import UserError, unknown
from robustlens.models._registry import entries, registered
from robustlens.models.checkpoints import is_weights_spec
from robustlens.models.classifier import Classifier
from robustlens.models.timm_models import build_timm, timm_available, timm_has
from robustlens.models.torchvision_models import build_torchvision, torchvision_names


def build_architecture(name: str, weights: str | None, seed: int) -> Classifier:
    """A :class:`Classifier` in eval mode: registered ``name`` (its builder, ``weights`` or its default), a
    torchvision name or ``timm:NAME`` (``weights``: ``imagenet`` (default), ``none`` or a file path)."""
    key = name.strip()
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
