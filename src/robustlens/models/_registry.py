"""The model registry: names -> builders. It imports no model family (each family module registers itself;
:mod:`robustlens.models` imports the families), so adding a family is one new module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from robustlens.models.classifier import Classifier

Builder = Callable[[str, int], Classifier]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Builder  # (weights, seed) -> Classifier
    description: str
    default_weights: str = "imagenet"


_ENTRIES: dict[str, ModelEntry] = {}


def register_model(name: str, description: str, default_weights: str = "imagenet"):
    """Decorator registering ``builder(weights: str, seed: int) -> Classifier`` under ``name``."""

    def wrap(builder: Builder) -> Builder:
        _ENTRIES[name] = ModelEntry(name, builder, description, default_weights)
        return builder

    return wrap


def registered(name: str) -> ModelEntry | None:
    """The entry registered under ``name``, or None."""
    return _ENTRIES.get(name)


def entries() -> list[ModelEntry]:
    """Every registered entry, in registration order."""
    return list(_ENTRIES.values())



def seeded_init(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` under a private RNG seeded with ``seed`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()
