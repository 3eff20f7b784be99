"""Recipes over the engine: attacks (with 8-bit quantisation), feature inversion, DeepDream, feature
visualisation."""

from robustlens.recipes.attacks import AttackResult, attack, fgsm, pgd
from robustlens.recipes.dream import dream
from robustlens.recipes.inversion import invert
from robustlens.recipes.visualize import visualize

__all__ = ["AttackResult", "attack", "dream", "fgsm", "invert", "pgd", "visualize"]
