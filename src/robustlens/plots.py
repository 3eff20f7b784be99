"""Figures: top-k bars, image grids, loss curves. Everything writes PNG files (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from robustlens.images import to_uint8  # noqa: E402
from robustlens.models.classify import Prediction  # noqa: E402


def amplified(delta: torch.Tensor) -> tuple[torch.Tensor, float]:
    """A perturbation (C,H,W) made visible: ``0.5 + a·δ`` with ``a = 0.5 / max|δ|`` (grey = no change);
    returns the image in [0, 1] and the factor ``a`` (1.0 for δ = 0)."""
    peak = float(delta.detach().abs().max())
    factor = 0.5 / peak if peak > 0 else 1.0
    return (0.5 + factor * delta.detach()).clamp(0, 1), factor


def save_figure(fig, path: str | Path, *, dpi: int | None = None, rect: tuple | None = None) -> Path:
    """Lay out ``fig`` (``tight_layout``, within ``rect`` if given), write it to ``path`` and close it."""
    fig.tight_layout(**({"rect": rect} if rect is not None else {}))
    p = Path(path)
    fig.savefig(p, **({"dpi": dpi} if dpi is not None else {}))
    plt.close(fig)
    return p


def _short(name: str, n: int = 28) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def plot_topk(preds: Sequence[Prediction], path: str | Path, *, value: str = "prob", title: str = "",
              highlight: int | None = None) -> Path:
    """Horizontal bars of the top-k ``prob`` or ``logit`` values, class names on the axis, best on top."""
    vals = [getattr(p, value) for p in preds]
    labels = [f"{_short(p.name)} ({p.index})" for p in preds]
    colors = ["#d62728" if p.index == highlight else "#1f77b4" for p in preds]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(preds) + 1.2), dpi=100)
    ax.barh(range(len(vals))[::-1], vals, color=colors)
    ax.set_yticks(range(len(vals))[::-1], labels)
    ax.set_xlabel("probability" if value == "prob" else "logit")
    if value == "prob":
        ax.set_xlim(0, 1)
    for i, v in enumerate(vals):
        ax.text(v, len(vals) - 1 - i, f" {v:.3f}" if value == "prob" else f" {v:.2f}", va="center", fontsize=8)
    ax.set_title(title or f"top-{len(preds)} {'probabilities' if value == 'prob' else 'logits'}")
    return save_figure(fig, path)


def image_grid(images: Sequence[torch.Tensor], titles: Sequence[str], path: str | Path, *, ncols: int | None = None,
               suptitle: str = "") -> Path:
    """A grid of (C,H,W) [0,1] images with titles."""
    n = len(images)
    ncols = ncols or n
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3.2 * nrows), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t in zip(axes.flat, images, titles):
        arr = to_uint8(img)
        ax.imshow(arr if arr.ndim == 3 and arr.shape[2] == 3 else arr.squeeze(), cmap=None if arr.ndim == 3 and
                  arr.shape[2] == 3 else "gray")
        ax.set_title(t, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    # leave the suptitle its own band above the first row's titles
    return save_figure(fig, path, rect=(0, 0, 1, 1 - 0.5 / (3.2 * nrows)) if suptitle else None)


def plot_curves(series: dict[str, Sequence[float]], path: str | Path, *, xlabel: str = "step", ylabel: str = "",
                title: str = "", logy: bool = False) -> Path:
    """One line per named series."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, ys in series.items():
        ax.plot(range(len(ys)), list(ys), label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
