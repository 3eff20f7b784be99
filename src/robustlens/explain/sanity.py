"""Model-randomisation sanity checks (Adebayo et al. 2018): does the map change when the weights it explains
are destroyed?

Units are the network's top-level children, containers (``ModuleList``/``Sequential``) opened one level
(``_fc``, ``_conv_head``, ``_blocks.15`` ... ``_conv_stem``; ``fc``, ``layer4`` ... ``conv1``), those with
parameters, from the output side down. *Cascading*: stage i randomises units 0..i; *independent*: only unit
i. Randomising replaces every parameter of a unit by i.i.d. Gaussian draws with that tensor's own mean and
standard deviation (the learned structure goes, the scale of the activations stays). Always on a deep copy;
the user's model is never modified. The targets are the original model's (top-1 unless given).

Per stage: Spearman rank correlation of the absolute maps (Σ_c |a_c|, ties ranked by their mean) and SSIM
of the maps scaled by their 99th percentile, between the original and the randomised model, per image. A
method passes when its mean rank correlation over the cascade (the mean over stages of the mean over images)
is below ``threshold`` (default 0.5): the map must stop resembling the original once the top layers are gone,
not only once the whole network is. (Judged only at the last stage, Guided Backprop would pass: its map stays
similar while the top blocks are randomised and changes only when the first ones are, Adebayo et al.'s
finding.)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robustlens.explain._core import TargetSpec, check_images, resolve_targets
from robustlens.explain.methods import attribute, parse_methods
from robustlens.explain.visual import clip_normalise, reduce_channels
from robustlens.models.layers import _root

CONTAINERS = (nn.ModuleList, nn.Sequential)


def randomisation_units(model: nn.Module) -> list[str]:
    """Names of the units (see module docstring), output side first."""
    units = []
    for name, child in _root(model).named_children():
        inner = list(child.named_children()) if isinstance(child, CONTAINERS) else []
        for sub, mod in inner or [("", child)]:
            full = f"{name}.{sub}" if sub else name
            if any(True for _ in mod.parameters()):
                units.append(full)
    return units[::-1]


def randomised(model: nn.Module, units: Sequence[str], seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` in which every parameter of each named unit is redrawn (see module docstring)."""
    clone = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    root = _root(clone)
    with torch.no_grad():
        for name in units:
            for p in root.get_submodule(name).parameters():
                mean, std = p.float().mean(), (p.float().std() if p.numel() > 1 else p.float().abs().mean())
                noise = torch.randn(p.shape, generator=g).to(p)
                p.copy_(mean + std * noise)
    return clone


def spearman(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """(N,) Spearman rank correlation between maps a and b (N,H,W), ties ranked by their mean."""
    from scipy.stats import spearmanr

    out = []
    for x, y in zip(a.flatten(1).cpu().double().numpy(), b.flatten(1).cpu().double().numpy()):
        r = spearmanr(x, y).statistic if x.std() > 0 and y.std() > 0 else 0.0
        out.append(float(r))
    return np.asarray(out)


def ssim(a: torch.Tensor, b: torch.Tensor, percentile: float = 99.0) -> np.ndarray:
    """(N,) SSIM between maps a and b (N,H,W), each scaled to [0, 1] by its ``percentile``-th percentile."""
    from skimage.metrics import structural_similarity

    na, nb = clip_normalise(a, percentile).cpu().numpy(), clip_normalise(b, percentile).cpu().numpy()
    return np.asarray([float(structural_similarity(x, y, data_range=1.0)) for x, y in zip(na, nb)])


@dataclass
class SanityResult:
    """Per method: ``stages`` (unit names, top first), ``spearman``/``ssim``: ``[mode][method]`` → (stages, N)
    lists, ``verdict``: ``[method]`` → pass/fail of the cascading test."""

    methods: list[str]
    stages: list[str]
    spearman: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    ssim: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    verdict: dict[str, bool] = field(default_factory=dict)
    threshold: float = 0.5

    def final_spearman(self, method: str) -> float:
        """Mean rank correlation over images with every unit randomised (cascading)."""
        return float(np.mean(self.spearman["cascading"][method][-1]))

    def cascade_spearman(self, method: str) -> float:
        """Mean over the cascading stages of the mean rank correlation over images (what the verdict reads)."""
        return float(np.mean([np.mean(r) for r in self.spearman["cascading"][method]]))

    def to_dict(self) -> dict:
        def summary(table):
            return {mode: {m: [float(np.mean(v)) for v in rows] for m, rows in per.items()}
                    for mode, per in table.items()}

        return {"methods": self.methods, "stages": self.stages, "threshold": self.threshold,
                "verdict": {m: "pass" if ok else "fail" for m, ok in self.verdict.items()},
                "cascade_mean_spearman": {m: self.cascade_spearman(m) for m in self.methods},
                "final_spearman": {m: self.final_spearman(m) for m in self.methods},
                "mean_spearman": summary(self.spearman), "mean_ssim": summary(self.ssim)}


def _abs_map(method: str, model: nn.Module, x: torch.Tensor, targets: torch.Tensor, options: dict) -> torch.Tensor:
    return reduce_channels(attribute(method, model, x, targets, **options).maps, "abs")   # (N,H,W)


def sanity_check(model: nn.Module, x: torch.Tensor, *, methods: str | Sequence[str] = ("saliency", "gradcam"),
                 target: TargetSpec = None, modes: Sequence[str] = ("cascading", "independent"),
                 stages: int | None = None, threshold: float = 0.5, seed: int = 0, progress: bool = False,
                 **options) -> SanityResult:
    """Run the randomisation tests on images x (N,C,H,W in [0,1]). ``stages``: use at most this many units
    (the top one, the bottom one and evenly spaced ones between); ``options`` go to the methods."""
    x = check_images(x)
    names = parse_methods(methods)
    targets = resolve_targets(model, x, target)
    units = randomisation_units(model)
    if stages is not None and stages < len(units):
        units = [units[i] for i in np.unique(np.linspace(0, len(units) - 1, max(2, stages)).round().astype(int))]
    all_units = randomisation_units(model)
    res = SanityResult(methods=names, stages=units, threshold=threshold)
    base = {m: _abs_map(m, model, x, targets, options) for m in names}
    from tqdm import tqdm

    for mode in modes:
        res.spearman[mode] = {m: [] for m in names}
        res.ssim[mode] = {m: [] for m in names}
        for unit in tqdm(units, desc=f"sanity {mode}", disable=not progress):
            chosen = all_units[:all_units.index(unit) + 1] if mode == "cascading" else [unit]
            rand = randomised(model, chosen, seed)
            for m in names:
                maps = _abs_map(m, rand, x, targets, options)
                res.spearman[mode][m].append(spearman(base[m], maps).tolist())
                res.ssim[mode][m].append(ssim(base[m], maps).tolist())
    if "cascading" in modes:
        res.verdict = {m: res.cascade_spearman(m) < threshold for m in names}
    return res


def plot_sanity(res: SanityResult, path: str | Path, *, title: str = "") -> Path:
    """Mean Spearman and SSIM against the randomised stage, one line per method (cascading solid, independent
    dashed); the verdict in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robustlens.plots import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6))
    xs = np.arange(len(res.stages))
    for ax, table, label in ((axes[0], res.spearman, "Spearman rank correlation (|map|)"), (axes[1], res.ssim, "SSIM")):
        for mode, per in table.items():
            for i, (m, rows) in enumerate(per.items()):
                verdict = ("pass" if res.verdict.get(m) else "fail") if res.verdict else ""
                ax.plot(xs, [np.mean(r) for r in rows], "-o" if mode == "cascading" else "--", color=f"C{i}",
                        markersize=3, label=f"{m} ({mode}{', ' + verdict if mode == 'cascading' else ''})")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(xs)
        ax.set_xticklabels(res.stages, rotation=70, fontsize=7)
        ax.set_ylabel(label)
        ax.set_xlabel("randomised from the top down to (cascading) / only (independent)")
    axes[0].axhline(res.threshold, color="grey", ls=":", lw=1,
                    label=f"verdict threshold (cascade mean) {res.threshold:g}")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=100, rect=(0, 0.2, 1, 1))
