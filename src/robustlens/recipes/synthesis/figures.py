"""The robust-vs-standard figure of a synthesis task: the starts (and the originals, when the task hides or
degrades them) in the first rows, then one row per model, same columns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from robustlens.plots import image_grid
from robustlens.recipes.synthesis.tasks import (
    SynthesisResult,
    generate,
    inpaint,
    paint_features,
    sketch_to_image,
    super_resolve,
    translate,
)

RECIPES: dict[str, Callable[..., SynthesisResult]] = {
    "generate": generate, "inpaint": inpaint, "superres": super_resolve, "translate": translate,
    "sketch": sketch_to_image, "paint": paint_features}


def comparison_figure(results: dict[str, SynthesisResult], path: str | Path, *, columns: int = 8,
                      originals: torch.Tensor | None = None, class_name: Callable[[int], str] | None = None,
                      title: str = "", pick: Sequence[int] | None = None) -> Path:
    """Write a PNG grid to ``path``: row "start" (the common start of every result: same seeds, same inputs),
    row "original" when ``originals`` (N,C,H,W) is given, then one row per entry of ``results`` (label →
    result), each showing the rows ``pick`` (default: the first ``columns``) titled with the model's top-1 (``class_name``) and, for
    targeted tasks, p(target)."""
    first = next(iter(results.values()))
    idx = list(pick) if pick is not None else list(range(min(columns, len(first.images))))
    n = len(idx)
    name = class_name or str
    images: list[torch.Tensor] = []
    titles: list[str] = []
    rows = [("start", first.starts)] + ([("original", originals)] if originals is not None else [])
    for label, row in rows:
        images += list(row[idx].cpu())
        titles += [f"{label}" + (f"\ntarget {name(int(first.targets[i]))}" if first.targets is not None else "")
                   for i in idx]
    for label, res in results.items():
        images += list(res.images[idx].cpu())
        for i in idx:
            t = f"{label}: {name(int(res.predicted[i]))}"
            if res.target_prob is not None:
                t += f"\np(target) {float(res.target_prob[i]):.2f}"
            titles.append(t)
    return image_grid(images, titles, path, ncols=n, suptitle=title or f"{first.task}: " + " vs ".join(results))


def robust_vs_standard(task: str, models: dict, path: str | Path, *, originals: torch.Tensor | None = None,
                       columns: int = 8, pick: Sequence[int] | None = None, **inputs) -> dict[str, SynthesisResult]:
    """Run ``task`` (a key of :data:`RECIPES`) with the same ``inputs`` (the recipe's keyword arguments, e.g.
    ``images=``, ``masks=``, ``targets=``, ``seed=``) on every model of ``models`` (label → model, e.g.
    ``{"robust": ..., "standard": ...}``) and write their :func:`comparison_figure` to ``path``."""
    if task not in RECIPES:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(RECIPES)}")
    results = {label: RECIPES[task](model, **inputs) for label, model in models.items()}
    first = next(iter(models.values()))
    comparison_figure(results, path, columns=columns, originals=originals, pick=pick,
                      class_name=getattr(first, "class_name", None))
    return results
