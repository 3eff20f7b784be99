"""Faithfulness: deletion and insertion curves (Petsiuk et al. 2018, RISE).

Pixels are ranked by the absolute map (Σ_c |a_c|, most important first). Deletion: the most important
fraction f of the pixels is replaced by the baseline (black by default) and the target's softmax probability
is read; insertion: start from the baseline (a blurred copy by default) and put back the most important
fraction f. Curves at ``points`` fractions from 0 to 1; AUC by the trapezoid rule over f ∈ [0, 1]. A faithful
map gives a low deletion AUC and a high insertion AUC. All N·points images go through the model without
autograd, in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robustlens.explain._core import chunks
from robustlens.explain.integrated import make_baseline
from robustlens.explain.visual import reduce_channels


@dataclass
class Curves:
    """``fractions`` (P,), ``deletion``/``insertion`` (N,P) target probabilities, and their AUCs (N,)."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> np.ndarray:
        return np.trapezoid(self.deletion, self.fractions, axis=1)

    @property
    def insertion_auc(self) -> np.ndarray:
        return np.trapezoid(self.insertion, self.fractions, axis=1)

    def to_dict(self) -> dict:
        return {"fractions": self.fractions.tolist(), "deletion_auc": self.deletion_auc.tolist(),
                "insertion_auc": self.insertion_auc.tolist(), "mean_deletion_auc": float(self.deletion_auc.mean()),
                "mean_insertion_auc": float(self.insertion_auc.mean())}


def _masks(maps: torch.Tensor, fractions: np.ndarray) -> torch.Tensor:
    """(N,P,1,H,W) masks: 1 on the top fraction f_p of pixels of each map (N,C,H,W) by Σ_c |a_c|."""
    m = reduce_channels(maps, "abs").flatten(1)                              # (N,H·W)
    n, hw = m.shape
    rank = torch.empty_like(m, dtype=torch.long)
    rank.scatter_(1, m.argsort(1, descending=True), torch.arange(hw).expand(n, hw).contiguous())   # 0 = most important
    counts = torch.as_tensor(np.round(fractions * hw), dtype=torch.long).view(1, -1, 1)            # (1,P,1)
    return (rank.unsqueeze(1) < counts).float().view(n, len(fractions), 1, *maps.shape[-2:])


@torch.inference_mode()
def _probabilities(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(M,) softmax probability of each row's target for images (M,C,H,W)."""
    out = torch.empty(images.shape[0])
    for s in chunks(images.shape[0], batch_size):
        out[s] = model(images[s]).float().softmax(1).gather(1, targets[s].view(-1, 1)).squeeze(1).cpu()
    return out


def deletion_insertion(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
                       points: int = 21, deletion_baseline: str = "black", insertion_baseline: str = "blur",
                       batch_size: int = 64) -> Curves:
    """Deletion and insertion curves for images x (N,C,H,W), maps (N,C',H,W) and targets (N,)."""
    fr = np.linspace(0, 1, points)
    mask = _masks(maps, fr)                                                  # (N,P,1,H,W)
    xs = x.unsqueeze(1)                                                      # (N,1,C,H,W)
    dele = xs * (1 - mask) + make_baseline(x, deletion_baseline).unsqueeze(1) * mask
    ins = make_baseline(x, insertion_baseline).unsqueeze(1) * (1 - mask) + xs * mask
    t = targets.repeat_interleave(points)
    n = x.shape[0]
    pd = _probabilities(model, dele.flatten(0, 1), t, batch_size).view(n, points)
    pi = _probabilities(model, ins.flatten(0, 1), t, batch_size).view(n, points)
    return Curves(fr, pd.numpy(), pi.numpy())
