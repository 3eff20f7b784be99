"""Recipes over the engine: attacks (with 8-bit quantisation), feature inversion, DeepDream, feature
visualisation."""

from robustlens.recipes.attacks import AttackResult, EightBit, attack, fgsm, pgd, quantize_in_ball
from robustlens.recipes.dream import dream
from robustlens.recipes.inversion import invert
from robustlens.recipes.visualize import visualize

__all__ = ["AttackResult", "EightBit", "attack", "dream", "fgsm", "invert", "pgd", "quantize_in_ball", "visualize"]
