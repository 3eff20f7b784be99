"""robustlens: see what an image classifier sees and how it is fooled."""

from .attacks import attack, fgsm, pgd
from .checkpoints import load_weights, save_weights
from .classify import classify, output2prob
from .compare import compare_models
from .datasets import open_dataset, parse_data_spec
from .dream import dream
from .engine import optimize
from .evaluate import evaluate_robustness
from .images import load_image, save_image
from .inversion import invert
from .labels import resolve_class
from .layers import get_activations, layer_table
from .threat import make_threat
from .training import TrainConfig, train
from .visualize import visualize
from .zoo import Classifier, create_model, list_models

__all__ = ["Classifier", "classify", "create_model", "get_activations", "layer_table", "list_models",
           "load_image", "output2prob", "resolve_class", "save_image",
           "attack", "dream", "fgsm", "invert", "make_threat", "optimize", "pgd", "visualize",
           "TrainConfig", "compare_models", "evaluate_robustness", "load_weights", "open_dataset", "parse_data_spec",
           "save_weights", "train"]
