"""Robust models: data sets, robustness evaluation, adversarial training (also under torchrun), and standard vs
robust comparisons."""

from robustlens.robust.compare import compare_models
from robustlens.robust.datasets import open_dataset, parse_data_spec
from robustlens.robust.evaluate import evaluate_robustness
from robustlens.robust.training import TrainConfig, train

__all__ = ["TrainConfig", "compare_models", "evaluate_robustness", "open_dataset", "parse_data_spec", "train"]
