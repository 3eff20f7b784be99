"""What every section of the report reads: the settings (:class:`ReportSettings`) and the run context
(:class:`ReportContext`: the image, the models from one :class:`robustlens.models.cache.ModelCache`, the output
folder, and results one section leaves for another)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from robustlens.images import save_image
from robustlens.models import Classifier
from robustlens.models.cache import ModelCache
from robustlens.models.classify import Prediction
from robustlens.models.preprocess import to_batch
from robustlens.plots import plot_topk
from robustlens.report.blocks import safe_file_name

TARANTULA, TIGER_CAT, GOLDFISH = 76, 282, 1
SYNTHESIS_PUBLISHED_MEAN = 255  # steps per synthesis task at the published counts (720, 40, 200, 60)


@dataclass(frozen=True)
class ReportSettings:
    """Every knob of the report. ``ReportSettings()`` is the full report (what ``robustlens demo`` runs,
    sized to finish in under 10 minutes on a 2-core CPU); :meth:`quick_settings` is a smoke version that
    checks the whole pipeline in about a minute (the pictures are rough).

    ε in [0, 1] pixel units. Empty layer/unit names mean "chosen from the model" (see
    :func:`robustlens.models.layers.default_inversion_layers`). ``explain_steps``: Integrated Gradients steps;
    ``explain_samples``: SmoothGrad draws. ``synthesis_steps``: PGD steps of every synthesis task (0: each
    task's published count); ``synthesis_data``: a data spec (``folder:PATH``) to fit the seeds of
    class-conditional generation (empty: seeds already cached for the robust model, else no generation).
    """

    seed: int = 0
    targets: tuple[int, ...] = (TARANTULA, TIGER_CAT)
    norm: str = "linf"
    eps: float = 4 / 255
    attack_steps: int = 50
    inversion_layers: tuple[str, ...] = ()
    inversion_steps: int = 100
    robust_targets: tuple[int, ...] = (TIGER_CAT, TARANTULA, GOLDFISH)  # 4(e) on a 1000-class (ImageNet) pair
    robust_norm: str = "l2"
    robust_eps: float = 1.5   # the default robust model's training ε (L2, 128 px)
    robust_attack_steps: int = 60
    robust_big_eps: float = 20.0
    robust_big_steps: int = 100
    robust_inversion_steps: int = 200
    dream_layer: str = ""
    dream_steps: int = 10
    dream_octaves: int = 3
    visualize_unit: str = ""
    visualize_steps: int = 96
    visualize_size: int = 160
    digits_epochs: int = 8
    explain_methods: tuple[str, ...] = ("saliency", "smoothgrad", "ig", "gradcam")
    explain_steps: int = 32
    explain_samples: int = 16
    synthesis_steps: int = 0
    synthesis_data: str = ""
    quick: bool = False

    @classmethod
    def quick_settings(cls, **overrides: Any) -> "ReportSettings":
        """A few steps of everything: checks the pipeline end to end in well under a minute."""
        base = dict(attack_steps=10, inversion_steps=3, robust_attack_steps=3, robust_big_steps=3,
                    robust_inversion_steps=3, dream_steps=2, dream_octaves=1, visualize_steps=3, visualize_size=64,
                    digits_epochs=1, explain_steps=2, explain_samples=2, synthesis_steps=3, quick=True)
        return cls(**{**base, **overrides})

    def scaled(self, factor: float) -> "ReportSettings":
        """Every optimisation's step count times ``factor`` (at least 2 each; the explain counts at least 2)."""
        def n(v: int) -> int:
            return max(2, round(v * factor))

        names = ("attack_steps", "inversion_steps", "robust_attack_steps", "robust_big_steps",
                 "robust_inversion_steps", "dream_steps", "visualize_steps", "explain_steps", "explain_samples")
        over: dict[str, Any] = {k: n(getattr(self, k)) for k in names}
        if factor < 1:  # 0 means each synthesis task's published count (inpainting 720 steps ...)
            over["synthesis_steps"] = n(self.synthesis_steps or SYNTHESIS_PUBLISHED_MEAN)
        return replace(self, **over)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        d["robust_targets"] = list(self.robust_targets)
        d["inversion_layers"] = list(self.inversion_layers)
        d["explain_methods"] = list(self.explain_methods)
        return d


@dataclass
class ReportContext:
    """What every section reads: the image, the models (built once, on demand), the output folder, and
    ``shared`` results one section leaves for a later one."""

    out: Path
    image: Image.Image
    image_label: str
    model_name: str
    weights: str | None
    robust_name: str | None
    robust_weights: str | None
    settings: ReportSettings
    device: torch.device
    log: Callable[[str], None]
    models: ModelCache = field(init=False)
    shared: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.models = ModelCache(self.device)

    def model(self, name: str, weights: str | None = None, *, seed: int | None = None) -> Classifier:
        return self.models.get(name, weights, seed=seed)

    def main_model(self) -> Classifier:
        return self.model(self.model_name, self.weights)

    def input_for(self, model: Classifier) -> torch.Tensor:
        """The report's image preprocessed for ``model``: (1, C, S, S) in [0, 1], exactly as the commands read it."""
        return to_batch([self.image], model.config, self.device)

    def figure(self, name: str) -> Path:
        """Where a figure called ``name`` goes (a safe file name in the output folder)."""
        return self.out / safe_file_name(name)

    def save(self, x: torch.Tensor, name: str) -> str:
        """Save the (C, H, W) image ``x`` in [0, 1] as a PNG; returns its file name."""
        return save_image(x.detach().cpu(), self.figure(name)).name

    def topk_plot(self, preds: list[Prediction], name: str, *, value: str = "prob", title: str = "",
                  highlight: int | None = None) -> str:
        """A top-k bar plot of ``preds``; returns its file name."""
        return plot_topk(preds, self.figure(name), value=value, title=title, highlight=highlight).name
