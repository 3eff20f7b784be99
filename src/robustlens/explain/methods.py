"""The method registry: a name → its class, and one call that runs any method with its options."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustlens.errors import unknown
from robustlens.explain._core import Attribution, TargetSpec
from robustlens.explain.cam import GradCAM, GradCAMPlusPlus
from robustlens.explain.gradients import GradientXInput, GuidedBackprop, Saliency, SmoothGrad
from robustlens.explain.integrated import IntegratedGradients

METHODS = {"saliency": Saliency, "gradxinput": GradientXInput, "smoothgrad": SmoothGrad, "ig": IntegratedGradients,
           "gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "guided_backprop": GuidedBackprop}
"""Every attribution method by the name :func:`attribute`, the CLI and the app take → its class."""
DEFAULT_METHODS = ("saliency", "gradxinput", "smoothgrad", "ig", "gradcam", "gradcampp")
"""The methods :func:`robustlens.explain.explain` runs when none are named: all of :data:`METHODS` but Guided
Backprop."""
# the options each method's ``attribute`` (or, for ``layer``, constructor) accepts
OPTIONS = {"smoothgrad": ("samples", "sigma", "squared", "noise", "generator"),
           "ig": ("steps", "rule", "baseline", "generator"), "gradcam": ("layer",), "gradcampp": ("layer",)}


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``"saliency,ig"`` or ``"all"`` (the default set plus Guided Backprop) → method names, checked."""
    names = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    if names == ["all"]:
        return [*DEFAULT_METHODS, "guided_backprop"]
    for n in names:
        if n not in METHODS:
            raise unknown("attribution method", n, [*METHODS, "all"])
    return list(dict.fromkeys(names))


def attribute(method: str, model: nn.Module, x: torch.Tensor, target: TargetSpec = None, **options) -> Attribution:
    """Run ``method`` on ``model`` for images x (N,C,H,W in [0,1]); ``options`` not used by it are ignored.

    Example:

    ```pycon
    >>> import torch
    >>> from robustlens.explain import attribute
    >>> from robustlens.models import create_model
    >>> model = create_model("mnist_lenet5", "none", seed=0)
    >>> a = attribute("saliency", model, torch.rand(2, 1, 28, 28), target=3)
    >>> a.maps.shape, a.targets.tolist()
    (torch.Size([2, 1, 28, 28]), [3, 3])

    ```
    """
    cls = METHODS.get(method)
    if cls is None:
        raise unknown("attribution method", method, list(METHODS))
    mine = {k: v for k, v in options.items() if k in OPTIONS.get(method, ()) and v is not None}
    layer = mine.pop("layer", None)
    obj = cls(model, layer) if method in ("gradcam", "gradcampp") else cls(model)
    return obj.attribute(x, target, **mine)
