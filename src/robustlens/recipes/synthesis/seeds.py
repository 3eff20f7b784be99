"""Class-conditional seed distributions for generation (Santurkar et al. 2019, §3.1).

Per class k, a multivariate Gaussian N(μ_k, Σ_k + 1e-4·I) is fitted to that class's training images
downsampled ×4 (area average), flattened to D = 3·(S/4)² values in [0,1]. A seed is a sample, clamped to
[0,1] and nearest-upsampled ×4 to the model's input size S.

The fit is cached on disk (one safetensors file per model and class set: ``mean`` (K,D) and the Cholesky
factor ``scale_tril`` (K,D,D) of Σ_k + jitter·I, float32) under :func:`cache_dir`, so later runs do not
reread the data set. At S = 64 the file holds 10 × 768² floats (23 MB).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from robustlens.errors import UserError

JITTER = 1e-4  # added to every covariance (the published procedure)
DOWNSAMPLE = 4  # seeds live at S/4 px


def cache_dir() -> Path:
    """``$ROBUSTLENS_SEEDS_CACHE``, else ``~/.cache/robustlens/seeds``."""
    env = os.environ.get("ROBUSTLENS_SEEDS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "robustlens" / "seeds"


@dataclass
class ClassGaussians:
    """``classes`` (K,) model labels; ``side`` seed side in px; ``mean`` (K,D); ``scale_tril`` (K,D,D) lower
    Cholesky factor of Σ_k + jitter·I (float32; D = 3·side²); ``counts`` (K,) images per class; ``meta``."""

    classes: list[int]
    side: int
    mean: torch.Tensor
    scale_tril: torch.Tensor
    counts: list[int]
    meta: dict

    @property
    def covariance(self) -> torch.Tensor:
        """(K,D,D) Σ_k + jitter·I, rebuilt from the factor."""
        return self.scale_tril @ self.scale_tril.transpose(1, 2)

    def row(self, cls: int) -> int:
        if cls not in self.classes:
            raise UserError(f"no seed distribution for class {cls}: the fit covers classes {self.classes}")
        return self.classes.index(cls)

    def sample(self, classes: torch.Tensor, *, size: int, generator: torch.Generator) -> torch.Tensor:
        """One seed per entry of ``classes`` (N,): (N,3,size,size) in [0,1], nearest-upsampled from ``side``."""
        rows = torch.tensor([self.row(int(c)) for c in classes.reshape(-1)], dtype=torch.long)
        z = torch.randn(len(rows), self.mean.shape[1], 1, generator=generator, dtype=torch.float64)
        x = self.mean[rows].double() + (self.scale_tril[rows].double() @ z).squeeze(2)  # (N,D)
        x = x.float().clamp(0, 1).reshape(len(rows), 3, self.side, self.side)
        return F.interpolate(x, size=(size, size), mode="nearest")

    def save(self, path: Path) -> Path:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"mean": self.mean.contiguous(), "scale_tril": self.scale_tril.contiguous()}, str(tmp),
                  metadata={"classes": json.dumps(self.classes), "side": str(self.side),
                            "counts": json.dumps(self.counts), "meta": json.dumps(self.meta)})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> "ClassGaussians":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            md = f.metadata()
            mean, tril = f.get_tensor("mean"), f.get_tensor("scale_tril")
        return cls(classes=json.loads(md["classes"]), side=int(md["side"]), mean=mean, scale_tril=tril,
                   counts=json.loads(md["counts"]), meta=json.loads(md["meta"]))


def downsample(images: torch.Tensor, factor: int = DOWNSAMPLE) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,H/factor,W/factor) by area averaging."""
    h, w = images.shape[-2:]
    if h % factor or w % factor:
        raise UserError(f"images of {h}x{w} px cannot be downsampled x{factor} (not divisible)")
    return F.avg_pool2d(images.float(), factor)


def fit_class_gaussians(images: torch.Tensor, labels: torch.Tensor, *, factor: int = DOWNSAMPLE,
                        jitter: float = JITTER, meta: dict | None = None) -> ClassGaussians:
    """Fit N(μ_k, Σ_k + jitter·I) per class present in ``labels`` (N,) to ``images`` (N,3,S,S) in [0,1]
    downsampled ×``factor``. Σ_k is the unbiased sample covariance (``numpy.cov``); a class needs ≥ 2 images."""
    small = downsample(images, factor)
    flat = small.reshape(len(small), -1).double()  # (N,D)
    classes = sorted(int(c) for c in torch.unique(labels))
    means, trils, counts = [], [], []
    eye = torch.eye(flat.shape[1], dtype=torch.float64)
    for c in classes:
        xs = flat[labels == c]
        if len(xs) < 2:
            raise UserError(f"class {c} has {len(xs)} image(s): a covariance needs at least 2")
        mu = xs.mean(0)
        centred = xs - mu
        cov = centred.T @ centred / (len(xs) - 1) + jitter * eye
        means.append(mu.float())
        trils.append(torch.linalg.cholesky(cov).float())
        counts.append(len(xs))
    return ClassGaussians(classes=classes, side=small.shape[-1], mean=torch.stack(means),
                          scale_tril=torch.stack(trils), counts=counts,
                          meta={"factor": factor, "jitter": jitter, **(meta or {})})


def _cache_key(model, data: str, limit: int | None, factor: int) -> str:
    config = model.config
    key = {"data": str(Path(data.partition(":")[2]).expanduser().resolve()), "kind": data.partition(":")[0],
           "limit": limit, "factor": factor, "jitter": JITTER, "input_size": config.input_size,
           "resize_size": config.resize_size, "interpolation": config.interpolation,
           "wnids": list(getattr(model, "class_wnids", ()) or ()), "num_classes": int(model.num_classes)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def class_gaussians(model, data: str, *, limit: int | None = None, factor: int = DOWNSAMPLE,
                    cache: Path | None = None, progress: bool = False) -> ClassGaussians:
    """The seed distributions of ``model``'s classes fitted to the ``data`` spec (``folder:PATH``, see
    :func:`robustlens.robust.datasets.parse_data_spec`), read from the cache when the same model config, class
    set, data path, ``limit`` and ``factor`` were fitted before; else fitted and written to the cache."""
    from robustlens.robust.datasets import open_dataset, parse_data_spec, preload

    spec = parse_data_spec(data)
    folder = cache or cache_dir()
    path = folder / f"{getattr(model, 'name', 'model')}-{_cache_key(model, str(spec), limit, factor)}.safetensors"
    if path.is_file():
        return ClassGaussians.load(path)
    dataset = open_dataset(spec, model, limit=limit)
    pixels, labels = preload(dataset, progress=progress)
    fit = fit_class_gaussians(pixels.float() / 255.0, labels, factor=factor,
                              meta={"data": str(spec), "limit": limit, "model": getattr(model, "name", "")})
    fit.save(path)
    return fit
