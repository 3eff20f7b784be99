"""``explain``: the API behind ``robustlens explain`` — maps of every asked method on every asked model, their
faithfulness curves, optionally the sanity checks, and the figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from robustlens.errors import UserError
from robustlens.explain._core import Attribution, check_images
from robustlens.explain.faithfulness import Curves, deletion_insertion
from robustlens.explain.methods import DEFAULT_METHODS, attribute, parse_methods
from robustlens.explain.sanity import SanityResult, plot_sanity, sanity_check
from robustlens.explain.visual import plot_grid
from robustlens.models.preprocess import PreprocessConfig

ImageSpec = str | Path | Image.Image | torch.Tensor


@dataclass
class ModelExplanation:
    """One model's maps (``attributions[method].maps``), faithfulness curves and sanity result."""

    model: nn.Module
    images: torch.Tensor
    attributions: dict[str, Attribution]
    faithfulness: dict[str, Curves] = field(default_factory=dict)
    sanity: SanityResult | None = None

    @property
    def label(self) -> str:
        return str(getattr(self.model, "name", type(self.model).__name__))

    def to_dict(self) -> dict:
        first = next(iter(self.attributions.values()))
        name = getattr(self.model, "class_name", str)
        d = {"model": self.label, "weights": getattr(self.model, "weights", None),
             "targets": [{"index": int(t), "name": name(int(t))} for t in first.targets],
             "methods": {m: a.to_dict() for m, a in self.attributions.items()},
             "faithfulness": {m: c.to_dict() for m, c in self.faithfulness.items()}}
        if self.sanity is not None:
            d["sanity"] = self.sanity.to_dict()
        return d


@dataclass
class ExplainResult:
    """Per model (:class:`ModelExplanation`), the image labels, and the files written."""

    images: list[str]
    models: list[ModelExplanation]
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"images": self.images, "models": [m.to_dict() for m in self.models], "files": self.files}


def _load_models(models: str | Sequence[str | nn.Module] | nn.Module | None) -> list[nn.Module]:
    from robustlens.models import DEFAULT_MODEL, create_model

    if models is None:
        models = [DEFAULT_MODEL]
    elif isinstance(models, (str, nn.Module)):
        models = [s.strip() for s in models.split(",") if s.strip()] if isinstance(models, str) else [models]
    out = []
    for m in models:
        if isinstance(m, nn.Module):
            out.append(m)
        else:
            name, sep, weights = m.partition("=")
            out.append(create_model(name.strip(), weights.strip() if sep else None))
    if not out:
        raise UserError("give at least one model")
    return out


def _inputs(images: ImageSpec | Sequence[ImageSpec], model: nn.Module) -> torch.Tensor:
    """(N,3,S,S) in [0,1] for ``model``: paths and PIL images are preprocessed with the model's config; a tensor
    is used as it is."""
    from robustlens.images import load_pil
    from robustlens.models.preprocess import preprocess

    if isinstance(images, torch.Tensor):
        return check_images(images)
    items = [images] if isinstance(images, (str, Path, Image.Image)) else list(images)
    if not items:
        raise UserError("give at least one image")
    pil = [i if isinstance(i, Image.Image) else load_pil(i) for i in items]  # type: ignore[arg-type]
    device = next(model.parameters()).device
    config = model.config
    assert isinstance(config, PreprocessConfig), "a robustlens Classifier (with .config) is needed for image files"
    return torch.stack([preprocess(p, config) for p in pil]).to(device)


def _labels(images: ImageSpec | Sequence[ImageSpec]) -> list[str]:
    if isinstance(images, torch.Tensor):
        return [f"image{i}" for i in range(check_images(images).shape[0])]
    items = [images] if isinstance(images, (str, Path, Image.Image)) else list(images)
    return [str(i) if isinstance(i, (str, Path)) else f"image{k}" for k, i in enumerate(items)]


ModelSpec = str | Sequence[str | nn.Module] | nn.Module | None


def explain(images: ImageSpec | Sequence[ImageSpec], *, models: ModelSpec = None,
            methods: str | Sequence[str] = DEFAULT_METHODS, target: int | str | None = None, sanity: bool = False,
            faithfulness: bool = True, sanity_stages: int | None = 8, out: str | Path | None = None,
            percentile: float = 99.0, progress: bool = False, **options) -> ExplainResult:
    """Attribution maps of ``methods`` (names, ``"a,b"`` or ``"all"``) on each of ``models`` (names, ``"a,b"``,
    ``NAME=WEIGHTS`` or Classifier objects; default: the default model) for ``images`` (paths, PIL images, or a
    tensor (N,3,H,W) in [0,1]); ``target``: a class (index, wnid or name) or None for each model's top-1.
    ``options`` go to the methods (``steps``, ``rule``, ``baseline``, ``samples``, ``sigma``, ``layer``). With
    ``out``: one grid per image (rows model × method) and one sanity figure per model."""
    names = parse_methods(methods)
    loaded = _load_models(models)
    inputs = [_inputs(images, m) for m in loaded]                       # every input checked before any work
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"out {out} exists and is not a folder")
    targets: list[int | str | None] = [None] * len(loaded)
    if target is not None:
        from robustlens.robust.compare import check_same_target

        targets = list(check_same_target(loaded, str(target))) if len(loaded) > 1 else [target]
    result = ExplainResult(images=_labels(images), models=[])
    for model, x, t in zip(loaded, inputs, targets):
        attrs = {m: attribute(m, model, x, t, **options) for m in names}
        entry = ModelExplanation(model, x, attrs)
        if faithfulness:
            entry.faithfulness = {m: deletion_insertion(model, x, a.maps, a.targets) for m, a in attrs.items()}
        if sanity:
            entry.sanity = sanity_check(model, x, methods=names, target=attrs[names[0]].targets,
                                        stages=sanity_stages, progress=progress, **options)
        result.models.append(entry)
    if out is not None:
        result.files = _figures(result, Path(out), percentile)
    return result


def _figures(result: ExplainResult, out: Path, percentile: float) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    files = []
    stems = [Path(s).stem for s in result.images]
    if len(set(stems)) < len(stems):
        stems = [f"{i:03d}_{s}" for i, s in enumerate(stems)]
    for i, stem in enumerate(stems):
        rows = [(m.label, m.images[i], {k: a.maps[i] for k, a in m.attributions.items()}) for m in result.models]
        files.append(plot_grid(rows, out / f"{stem}_explain.png", percentile=percentile, title=stem).name)
    for k, m in enumerate(result.models):
        if m.sanity is not None:
            files.append(plot_sanity(m.sanity, out / f"sanity_{k}_{m.label}.png",
                                     title=f"{m.label}: model-randomisation sanity check").name)
    return files
