"""Which standard model to set beside a robust one (the report's 4(e)(f) and synthesis sections, the app's
Synthesize tab): the same architecture and data trained without adversarial examples."""

from __future__ import annotations

from robustlens.errors import UserError
from robustlens.models.classifier import Classifier


def standard_for(robust_name: str) -> tuple[str, str | None] | None:
    """``(model, weights)`` of the standard counterpart of the robust model ``robust_name``, or None if it has
    none: a published checkpoint → :func:`robustlens.models.published.standard_counterpart` (torchvision's
    ImageNet weights of its architecture); ``X_robust`` → ``X_standard`` when that name is registered."""
    from robustlens.models import published
    from robustlens.models._registry import registered

    if published.published(robust_name) is not None:
        return published.standard_counterpart(robust_name)
    if robust_name.endswith("_robust"):
        name = robust_name.removesuffix("_robust") + "_standard"
        if registered(name) is not None:
            return name, None
    return None


def check_same_space(standard: Classifier, robust: Classifier) -> None:
    """Refuse a pair that does not see the same pixels and classes (one line, UserError)."""
    if standard.config.input_size != robust.config.input_size or standard.num_classes != robust.num_classes or \
            getattr(standard, "class_wnids", None) != getattr(robust, "class_wnids", None):
        raise UserError(f"{standard.name} and {robust.name} differ in input size or classes; synthesis compares "
                        "the same task on the same pixels and classes (give a robust model with a standard "
                        "counterpart, e.g. imagenette128_resnet18_robust or a published ImageNet checkpoint)")
