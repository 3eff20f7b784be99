"""The audit's attribution figures of one model on its first ``images`` examples: how image-like the input
gradients are (:func:`robustlens.explain.alignment.edge_alignment`: Spearman and SSIM of |saliency| against the
Sobel edges, and Etmann et al.'s cosine) and the cascading model-randomisation check of saliency
(:func:`robustlens.explain.sanity.sanity_check`), with the true labels as targets."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MAPS_SHOWN = 4


def explain_record(model: nn.Module, dataset, *, images: int = 16, stages: int = 6, seed: int = 0) -> dict:
    """JSON-ready figures (and the first :data:`MAPS_SHOWN` saliency maps, rounded, for the page)."""
    from robustlens.explain.alignment import edge_alignment
    from robustlens.explain.sanity import sanity_check

    k = min(images, len(dataset))
    x = torch.stack([dataset[i][0] for i in range(k)]).to(next(model.parameters()).device)
    y = torch.as_tensor([dataset[i][1] for i in range(k)], device=x.device)
    model.eval()
    al = edge_alignment(model, x, y)
    maps = torch.as_tensor(al.pop("maps"))[:MAPS_SHOWN]
    scale = maps.flatten(1).quantile(0.99, dim=1).clamp_min(1e-12).view(-1, 1, 1)
    stats = {m: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if v.size > 1 else 0.0,
                 "per_image": [float(t) for t in v]} for m, v in al.items()}
    san = sanity_check(model, x, methods="saliency", target=y, modes=("cascading",), stages=stages, seed=seed)
    return {"images": k, "alignment": stats, "sanity": san.to_dict(),
            "maps": (maps / scale).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().tolist(),
            "inputs": x[:MAPS_SHOWN].mul(255).round().to(torch.uint8).cpu().tolist()}
