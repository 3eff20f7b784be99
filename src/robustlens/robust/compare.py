"""The same attack and the same feature inversions on several models (typically a standard and an
adversarially robust one), side by side.

Problem 4 (e)–(f): on a robust model a large-ε targeted attack paints visible features of the target class
and an inversion from deep features looks like the source image; on a standard model both look like noise.
Each model gets the image preprocessed its own way (:attr:`Classifier.config`); each adversarial image is
also shown to every other model ("transfer"), which is what the perceptual test measures.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from robustlens.checks import count, positive
from robustlens.errors import UserError
from robustlens.models.labels import imagenet_classes, resolve_class
from robustlens.models.preprocess import to_batch
from robustlens.recipes.attacks import AttackResult, attack
from robustlens.recipes.inversion import InversionResult, invert


@dataclass
class ModelRun:
    """One model's part: its input ``image`` (C,S,S), ``attack`` result, ``inversion`` (None without layers),
    ``target`` (its label for the target class, None for untargeted) and ``transfer``: for each other model,
    that model's top-1 (index, name, prob of the target or of its top-1) on this model's adversarial image."""

    name: str
    weights: str
    image: torch.Tensor
    attack: AttackResult
    inversion: InversionResult | None
    target: int | None
    target_name: str | None = None
    transfer: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        a = self.attack.to_dict()
        a.pop("history", None)
        return {"model": self.name, "weights": self.weights, "target": self.target,
                "target_name": self.target_name, "attack": a,
                "inversion": self.inversion.to_dict() if self.inversion is not None else None,
                "transfer": self.transfer}


def target_for(model, query: str) -> int:
    """The label of ``query`` (index, wnid or name) in ``model``'s label space.

    1000-class models: :func:`robustlens.models.labels.resolve_class`. Models over an ImageNet subset
    (``class_wnids``): a name or wnid is resolved as an ImageNet class and must be one of the model's
    classes; a number is the model's own label. Other models: their own label index."""
    wnids = getattr(model, "class_wnids", None)
    n = int(getattr(model, "num_classes", 1000))
    q = str(query).strip()
    if wnids is None or q.lstrip("-").isdigit():
        return resolve_class(q, n)
    wnid = imagenet_classes()[resolve_class(q, 1000)].wnid
    if wnid not in wnids:
        names = ", ".join(model.class_name(i) for i in range(n))
        raise UserError(f"class {query!r} ({wnid}) is not one of the {n} classes of {model.name}: {names}")
    return list(wnids).index(wnid)


def check_same_target(models: Sequence, query: str) -> list[int]:
    """Per-model labels of ``query``, refusing a bare index when the models' label spaces differ."""
    spaces = {(int(getattr(m, "num_classes", 1000)), tuple(getattr(m, "class_wnids", None) or ())) for m in models}
    if str(query).strip().lstrip("-").isdigit() and len(spaces) > 1:
        raise UserError(f"--target {query}: an index means different classes in models with different label "
                        "spaces; name the class instead (e.g. 'tench' or n01440764)")
    return [target_for(m, query) for m in models]


def compare_models(
    models: Sequence,
    image: Image.Image,
    *,
    target: str | None = None,
    norm: str = "l2",
    eps: float = 10.0,
    steps: int = 100,
    step_size: float | None = None,
    layers: Sequence[str] = (),
    invert_steps: int = 200,
    invert_lr: float = 0.05,
    seed: int = 0,
    progress: bool = False,
) -> list[ModelRun]:
    """Attack (targeted at ``target``, else untargeted; no early stop, so a targeted attack keeps raising the
    target's probability) and invert ``image`` at ``layers`` on each of ``models``; then classify each model's
    adversarial image with every other model."""
    if len(models) < 2:
        raise UserError("compare needs at least two models")
    positive("eps", eps, allow_zero=True)
    positive("step_size", step_size)
    positive("invert_lr", invert_lr)
    count("steps", steps)
    count("invert_steps", invert_steps)
    targets = check_same_target(models, target) if target is not None else [None] * len(models)
    runs = []
    for m, t in zip(models, targets):
        x = to_batch([image], m.config, next(m.parameters()).device)[0]  # (C, S, S)
        res = attack(m, x, target=t, norm=norm, eps=eps, step_size=step_size, steps=steps, early_stop=False,
                     seed=seed, progress=progress)
        inv = invert(m, x, list(layers), steps=invert_steps, lr=invert_lr, seed=seed, progress=progress) \
            if layers else None
        runs.append(ModelRun(m.name, m.weights, x.cpu(), res, inv, t, m.class_name(t) if t is not None else None))
    for i, run in enumerate(runs):
        for j, other in enumerate(models):
            if i == j:
                continue
            x_other = to_batch([_to_pil(run.attack.adversarial[0])], other.config, next(other.parameters()).device)
            with torch.no_grad():
                probs = torch.softmax(other(x_other).double(), 1)[0]
            top = int(probs.argmax())
            entry = {"top1": top, "top1_name": other.class_name(top), "top1_prob": float(probs[top])}
            if targets[j] is not None:
                entry.update({"target": targets[j], "target_prob": float(probs[targets[j]]),
                              "is_target": top == targets[j]})
            run.transfer[other.name] = entry
    return runs


def plot_comparison(runs: Sequence[ModelRun], path: str | Path, *, title: str = "") -> Path:
    """One row per model: input, adversarial image (with the model's and the other models' verdicts), the
    perturbation (amplified), then one inversion per layer."""
    from robustlens.images import to_uint8
    from robustlens.plots import amplified, plt, save_figure

    n_inv = max((len(r.inversion.layers) if r.inversion is not None else 0) for r in runs)
    cols = 3 + n_inv
    fig, axes = plt.subplots(len(runs), cols, figsize=(2.7 * cols, 3.5 * len(runs)), dpi=110, squeeze=False)
    common = os.path.commonprefix([r.name for r in runs])
    cut = common.rfind("_") + 1 if "_" in common else 0
    for ax in axes.flat:
        ax.axis("off")

    def show(ax, img, text):
        arr = to_uint8(img)
        grey = arr.ndim == 2 or arr.shape[2] == 1
        ax.imshow(arr.squeeze() if grey else arr, cmap="gray" if grey else None, vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(text, fontsize=7.5)

    for row, run in zip(axes, runs):
        a = run.attack
        before, after = a.before[0][0], a.after[0][0]
        show(row[0], run.image, f"{run.name}\ninput: {_short(before.name)} p={before.prob:.2f}")
        goal = f"target {_short(run.target_name or str(run.target))}" if run.target is not None else "untargeted"
        verdicts = "; ".join(f"{_short(k[cut:] or k, 16)}: {_short(v['top1_name'], 14)}"
                             for k, v in run.transfer.items())
        eps = a.settings["eps"]
        show(row[1], a.adversarial[0], f"{goal}, {a.settings['norm']} ε={eps:g}\n→ {_short(after.name)} "
                                       f"p={after.prob:.2f}\nseen by {verdicts}")
        amp, factor = amplified(a.perturbation[0])
        show(row[2], amp, f"perturbation (×{factor:.1f})\nL2 {float(a.l2[0]):.2f}")
        if run.inversion is not None:
            for k, layer in enumerate(run.inversion.layers):
                show(row[3 + k], run.inversion.images[k],
                     f"inverted from {layer}\nrel. feature dist {float(run.inversion.distance[k]):.2f}")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def _to_pil(x: torch.Tensor) -> Image.Image:
    """A (C,H,W) [0,1] image as an RGB Pillow image (grey replicated)."""
    from robustlens.images import to_uint8

    arr = to_uint8(x)
    return Image.fromarray(arr.squeeze(2) if arr.ndim == 3 and arr.shape[2] == 1 else arr).convert("RGB")


def _short(name: str, n: int = 20) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"

