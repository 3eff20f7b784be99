"""How much a model's input gradient looks like the image: the rank correlation (and SSIM) between |saliency|
and the image's Sobel edge map, and the standard-vs-robust figure (robust models' gradients are perceptually
aligned: Tsipras et al. 2019, Etmann et al. 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustlens.explain._core import TargetSpec, check_images, resolve_targets
from robustlens.explain.gradients import Saliency
from robustlens.explain.sanity import spearman, ssim
from robustlens.explain.visual import clip_normalise, reduce_channels

LUMA = (0.299, 0.587, 0.114)


def sobel_edges(x: torch.Tensor) -> torch.Tensor:
    """(N,H,W) Sobel gradient magnitude of the luma of images x (N,3,H,W) (or of grey (N,1,H,W)), reflected
    borders.

    Example:

    ```pycon
    >>> import torch
    >>> from robustlens.explain import sobel_edges
    >>> x = torch.zeros(1, 3, 8, 8)
    >>> x[..., 4:] = 1.0  # a vertical edge between columns 3 and 4
    >>> e = sobel_edges(x)
    >>> e.shape, bool(e[0, 4, 3] > 0), float(e[0, 4, 0])
    (torch.Size([1, 8, 8]), True, 0.0)

    ```
    """
    grey = (x * torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True) \
        if x.shape[1] == 3 else x[:, :1]
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=x.dtype, device=x.device)
    k = torch.stack([kx, kx.t()]).unsqueeze(1)                               # (2,1,3,3)
    g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="reflect"), k)               # (N,2,H,W)
    return g.pow(2).sum(1).sqrt()


def edge_alignment(model: nn.Module, x: torch.Tensor, target: TargetSpec = None) -> dict[str, np.ndarray]:
    """Per image (N,): Spearman and SSIM between Σ_c|∂f_c/∂x_c| and the Sobel edge map of x; ``cosine``, the
    alignment of Etmann et al. (2019), |⟨x − x̄, g⟩| / (‖x − x̄‖ ‖g‖) with x̄ each image's per-channel mean and g
    the signed gradient; also the saliency maps themselves (``"maps"``, (N,H,W))."""
    x = check_images(x)
    grad = Saliency(model).attribute(x, resolve_targets(model, x, target)).maps            # (N,C,H,W)
    sal = reduce_channels(grad, "abs")
    edges = sobel_edges(x)
    centred = (x - x.mean(dim=(2, 3), keepdim=True)).flatten(1)
    g = grad.flatten(1)
    cosine = (centred * g).sum(1).abs() / (centred.norm(dim=1) * g.norm(dim=1)).clamp_min(1e-30)
    return {"spearman": spearman(sal, edges), "ssim": ssim(sal, edges), "cosine": cosine.double().cpu().numpy(),
            "maps": sal}


def _stats(v: np.ndarray) -> dict:
    return {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if v.size > 1 else 0.0}


def robust_vs_standard(models: Sequence[tuple[str, nn.Module]], x: torch.Tensor, target: TargetSpec = None, *,
                       figure: str | Path | None = None, show: int = 6) -> dict:
    """Edge alignment of each labelled model on images x (N,3,H,W); ``target`` as in every method (default:
    each model's top-1; give the true labels to compare like with like). Returns per model mean ± sd and the
    per-image values, the paired differences against the first model, and the figure's file name (rows:
    image, edges, then |saliency| of each model, for the first ``show`` images)."""
    x = check_images(x)
    out: dict = {"n": int(x.shape[0]), "models": {}}
    maps: dict[str, torch.Tensor] = {}
    for label, model in models:
        r = edge_alignment(model, x, target)
        maps[label] = torch.as_tensor(r.pop("maps")[:show])
        out["models"][label] = {k: {**_stats(v), "per_image": v.tolist()} for k, v in r.items()}
    first = models[0][0]
    for label in list(out["models"])[1:]:
        for metric in ("spearman", "ssim", "cosine"):
            diff = np.asarray(out["models"][label][metric]["per_image"]) - \
                np.asarray(out["models"][first][metric]["per_image"])
            out[f"{metric}_{label}_minus_{first}"] = {**_stats(diff), "fraction_positive": float((diff > 0).mean())}
    if figure:
        out["figure"] = _plot(x[:show], maps, Path(figure), out).name
    return out


def _plot(x: torch.Tensor, maps: dict[str, torch.Tensor], path: Path, stats: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robustlens.plots import save_figure

    rows = [("image", None), ("Sobel edges", clip_normalise(sobel_edges(x)))]
    rows += [(f"{k} |saliency|\nρ={stats['models'][k]['spearman']['mean']:.2f} "
              f"cos={stats['models'][k]['cosine']['mean']:.2f}", clip_normalise(m))
             for k, m in maps.items()]
    fig, axes = plt.subplots(len(rows), x.shape[0], figsize=(1.8 * x.shape[0], 1.9 * len(rows)), squeeze=False)
    for r, (label, m) in enumerate(rows):
        for c in range(x.shape[0]):
            ax = axes[r, c]
            if m is None:
                ax.imshow(x[c].permute(1, 2, 0).cpu().numpy())
            else:
                ax.imshow(m[c].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=7)
    fig.suptitle("|saliency| vs the image's Sobel edges (means over all images; ρ: Spearman with the edges, "
                 "cos: |cosine| of gradient and centred image)", fontsize=9)
    return save_figure(fig, path, dpi=100)
