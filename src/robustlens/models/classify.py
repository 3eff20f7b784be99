"""Classification: numerically stable softmax and top-k predictions."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


def output2prob(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax that cannot overflow: subtract the max before exponentiating (the problem set's output2prob).

    Works for logits of any magnitude (±1e4 included); returns probabilities that sum to 1 along ``dim``.

    Example:

    ```pycon
    >>> import torch
    >>> from robustlens.models import output2prob
    >>> output2prob(torch.tensor([[0.0, 0.0], [0.0, 1e9]])).tolist()
    [[0.5, 0.5], [0.0, 1.0]]

    ```
    """
    shifted = logits - logits.amax(dim=dim, keepdim=True)
    e = torch.exp(shifted)
    return e / e.sum(dim=dim, keepdim=True)


@dataclass(frozen=True)
class Prediction:
    """One of a model's top-k answers for one image: class ``index``, its ``name``, the raw ``logit`` and the
    softmax probability ``prob`` (in [0, 1])."""

    index: int
    name: str
    logit: float
    prob: float

    def to_dict(self) -> dict:
        return asdict(self)


def topk(model: nn.Module, logits: torch.Tensor, k: int = 5) -> list[list[Prediction]]:
    """Top-``k`` predictions per row of ``logits`` (N, classes); names from ``model.class_name``."""
    logits = logits.detach().float()
    probs = output2prob(logits.double()).float()
    k = min(k, logits.shape[-1])
    vals, idx = logits.topk(k, dim=-1)
    name = getattr(model, "class_name", str)
    return [[Prediction(int(i), name(int(i)), float(v), float(probs[r, i]))
             for v, i in zip(vals[r], idx[r])] for r in range(logits.shape[0])]


@torch.no_grad()
def classify(model: nn.Module, images: torch.Tensor, k: int = 5) -> list[list[Prediction]]:
    """Top-``k`` predictions for a batch of images (N,C,H,W in [0,1], already preprocessed)."""
    return topk(model, model(images), k)
