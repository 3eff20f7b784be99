"""Maps people can trust: channel reduction, percentile clipping, signed and absolute colourings, overlays, and
one grid per image × method × model (matplotlib, PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def reduce_channels(maps: torch.Tensor, mode: str = "abs") -> torch.Tensor:
    """(N,C,H,W) → (N,H,W): ``"abs"`` Σ_c |a_c| (the usual magnitude map), ``"signed"`` Σ_c a_c."""
    if mode not in ("abs", "signed"):
        raise ValueError(f"mode must be 'abs' or 'signed', got {mode!r}")
    return (maps.abs() if mode == "abs" else maps).sum(1)


def clip_normalise(m: torch.Tensor, percentile: float = 99.0, *, signed: bool = False) -> torch.Tensor:
    """Each (H,W) map of (N,H,W) scaled by its ``percentile``-th percentile of |m| and clipped: to [0, 1], or to
    [−1, 1] when ``signed``. An all-zero map stays zero.

    Example:

    ```pycon
    >>> import torch
    >>> from robustlens.explain import clip_normalise
    >>> m = clip_normalise(torch.tensor([[[0.0, 1.0], [2.0, 100.0]]]), percentile=100)
    >>> [[round(v, 4) for v in row] for row in m[0].tolist()]
    [[0.0, 0.01], [0.02, 1.0]]

    ```
    """
    flat = m.abs().flatten(1).float()
    scale = torch.quantile(flat, percentile / 100.0, dim=1).clamp_min(1e-12).view(-1, 1, 1)   # (N,1,1)
    out = m / scale
    return out.clamp(-1, 1) if signed else out.abs().clamp(0, 1)


def overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """(H,W,3) float array: the image (3,H,W in [0,1]) blended with ``heat`` (H,W in [0,1]) coloured by ``cmap``."""
    import matplotlib

    colour = matplotlib.colormaps[cmap](heat.detach().cpu().numpy())[..., :3]
    img = image.detach().cpu().permute(1, 2, 0).numpy()
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.clip((1 - alpha) * img + alpha * colour, 0, 1)


def _panel(ax, image: torch.Tensor, maps: torch.Tensor, style: str, percentile: float) -> None:
    """Draw one map (C,H,W) of one image in ``style``: ``abs``, ``signed`` or ``overlay``."""
    m = maps.unsqueeze(0)
    if style == "signed":
        ax.imshow(clip_normalise(reduce_channels(m, "signed"), percentile, signed=True)[0].cpu().numpy(), cmap="bwr",
                  vmin=-1, vmax=1)
    elif style == "overlay":
        ax.imshow(overlay(image, clip_normalise(reduce_channels(m, "abs"), percentile)[0]))
    else:
        ax.imshow(clip_normalise(reduce_channels(m, "abs"), percentile)[0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)


def plot_grid(rows: Sequence[tuple[str, torch.Tensor, dict[str, torch.Tensor]]], path: str | Path, *,
              styles: Sequence[str] = ("abs", "signed", "overlay"), percentile: float = 99.0,
              title: str = "") -> Path:
    """One grid for one image: ``rows`` are (model label, the image as that model saw it (3,H,W),
    {method: map (C,H,W)}); one row per model × method, one column per style after the image. Class-activation
    maps (one channel, non-negative) are drawn as absolute maps in the signed column. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robustlens.plots import save_figure

    entries = [(label, image, method, m) for label, image, maps in rows for method, m in maps.items()]
    fig, axes = plt.subplots(len(entries), len(styles) + 1, figsize=(2.2 * (len(styles) + 1), 2.2 * len(entries)),
                             squeeze=False)
    for r, (label, image, method, m) in enumerate(entries):
        axes[r, 0].imshow(image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy())
        axes[r, 0].set_ylabel(f"{label}\n{method}", fontsize=8)
        for c, style in enumerate(styles, start=1):
            _panel(axes[r, c], image, m, "abs" if (style == "signed" and m.shape[0] == 1) else style, percentile)
            if r == 0:
                axes[r, c].set_title(f"{style} (p{percentile:g})", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=100)
