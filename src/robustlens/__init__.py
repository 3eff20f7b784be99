"""robustlens: see what an image classifier sees and how it is fooled.

The public API is re-exported here and imported on first use (``import robustlens`` stays cheap; the
command line imports only what a command needs):

- models (:mod:`robustlens.models`): :func:`create_model`, :func:`list_models`, :class:`Classifier`,
  :func:`classify`, :func:`output2prob`, :func:`get_activations`, :func:`layer_table`, :func:`resolve_class`,
  :func:`load_weights`, :func:`save_weights`;
- the engine (:mod:`robustlens.optim`): :func:`optimize`, :func:`make_threat`, criteria :class:`Targeted` and
  :class:`Untargeted`;
- recipes (:mod:`robustlens.recipes`): :func:`attack`, :func:`pgd`, :func:`fgsm`, :func:`invert`,
  :func:`dream`, :func:`visualize`;
- robust models (:mod:`robustlens.robust`): :func:`evaluate_robustness`, :func:`train`, :class:`TrainConfig`,
  :func:`compare_models`, :func:`open_dataset`, :func:`parse_data_spec`;
- images: :func:`load_image`, :func:`save_image`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from robustlens.runtime_env import apply_defaults, tune_allocator

apply_defaults()  # before torch loads: OpenMP threads sleep while they wait (see robustlens.runtime_env)
tune_allocator()  # glibc keeps freed tensor buffers for reuse instead of unmapping them (see robustlens.runtime_env)

_MODULES = {
    "robustlens.models": ("Classifier", "classify", "create_model", "get_activations", "layer_table", "list_models",
                          "load_weights", "output2prob", "resolve_class", "save_weights"),
    "robustlens.optim": ("Targeted", "Untargeted", "make_threat", "optimize"),
    "robustlens.recipes": ("attack", "dream", "fgsm", "invert", "pgd", "visualize"),
    "robustlens.robust": ("TrainConfig", "compare_models", "evaluate_robustness", "open_dataset", "parse_data_spec",
                          "train"),
    "robustlens.images": ("load_image", "save_image"),
    "robustlens.explain": ("explain",),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = ["Classifier", "Targeted", "TrainConfig", "Untargeted", "attack", "classify", "compare_models",
           "create_model", "dream", "evaluate_robustness", "explain", "fgsm", "get_activations", "invert",
           "layer_table",
           "list_models", "load_image", "load_weights", "make_threat", "open_dataset", "optimize", "output2prob",
           "parse_data_spec", "pgd", "resolve_class", "save_image", "save_weights", "train", "visualize"]


def __getattr__(name: str) -> Any:
    if name == "__version__":  # the installed distribution's, as ``robustlens --version`` prints it
        from robustlens._version import version

        return version()
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'robustlens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from robustlens.explain import explain
    from robustlens.images import load_image, save_image
    from robustlens.models import (
        Classifier,
        classify,
        create_model,
        get_activations,
        layer_table,
        list_models,
        load_weights,
        output2prob,
        resolve_class,
        save_weights,
    )
    from robustlens.optim import Targeted, Untargeted, make_threat, optimize
    from robustlens.recipes.attacks import attack, fgsm, pgd
    from robustlens.recipes.dream import dream
    from robustlens.recipes.inversion import invert
    from robustlens.recipes.visualize import visualize
    from robustlens.robust import (
        TrainConfig,
        compare_models,
        evaluate_robustness,
        open_dataset,
        parse_data_spec,
        train,
    )
