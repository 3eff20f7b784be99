"""Models: the registry and its families, the :class:`Classifier` wrapper (normalisation as its first module),
preprocessing, labels, layers and activations, checkpoints, classification.

Importing this package registers the built-in families (:mod:`~robustlens.models.lite`,
:mod:`~robustlens.models.small`); torchvision and timm models are found by name in :func:`create_model`.
"""

from robustlens.models import lite, published, robustbench_nets, small  # noqa: F401  (the families register themselves)
from robustlens.models.checkpoints import load_weights, save_weights
from robustlens.models.classifier import Classifier, SubsetClassifier
from robustlens.models.classify import Prediction, classify, output2prob, topk
from robustlens.models.factory import DEFAULT_MODEL, DEFAULT_ROBUST_MODEL, create_model, list_models
from robustlens.models.labels import resolve_class
from robustlens.models.layers import get_activations, layer_table

__all__ = ["DEFAULT_MODEL", "DEFAULT_ROBUST_MODEL", "Classifier", "Prediction", "SubsetClassifier", "classify",
           "create_model", "get_activations", "layer_table", "list_models", "load_weights", "output2prob", "resolve_class",
           "save_weights", "topk"]
