"""One cache of built models, keyed by (name, weights, seed): the report and the app build each model once.

A model is built with :func:`robustlens.models.create_model` on first use and moved to the cache's device;
later calls with the same key return the same object (so its parameters, hooks and speed caches are shared).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from robustlens.models.classifier import Classifier
from robustlens.models.factory import create_model

ModelKey = tuple[str, str | None, int | None]


@dataclass
class ModelCache:
    """Models built on demand and kept by ``(name, weights, seed)`` on ``device``.

    ``seed`` is the random-init seed given to :func:`create_model` (``None``: its default); ``weights`` is as
    :func:`create_model` takes it (``None``: the model's own). Keys are compared as given: ``None`` and the
    name of the default weights are two entries.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _models: dict[ModelKey, Classifier] = field(default_factory=dict, repr=False)

    def get(self, name: str, weights: str | None = None, *, seed: int | None = None) -> Classifier:
        """The model for this key, built (and moved to :attr:`device`) the first time it is asked for."""
        key = (name, weights, seed)
        if key not in self._models:
            kw = {} if seed is None else {"seed": seed}
            self._models[key] = create_model(name, weights, **kw).to(self.device)
        return self._models[key]

    def put(self, model: Classifier, name: str, weights: str | None = None, *, seed: int | None = None) -> None:
        """Use an already built ``model`` for this key (e.g. one shared by several tests)."""
        self._models[(name, weights, seed)] = model

    def __contains__(self, key: object) -> bool:
        return key in self._models

    def __len__(self) -> int:
        return len(self._models)
