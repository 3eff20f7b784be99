"""robustlens: see what an image classifier sees and how it is fooled."""

from .classify import classify, output2prob
from .images import load_image, save_image
from .labels import resolve_class
from .layers import get_activations, layer_table
from .zoo import Classifier, create_model, list_models

__all__ = ["Classifier", "classify", "create_model", "get_activations", "layer_table", "list_models",
           "load_image", "output2prob", "resolve_class", "save_image"]
