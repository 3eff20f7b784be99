"""Class-conditional seed distributions for generation (Santurkar et al. 2019, §3.1).

Per class k, a multivariate Gaussian N(μ_k, Σ_k + 1e-4·I) is fitted to that class's training images
downsampled ×4 (area average), flattened to D = 3·(S/4)² values in [0,1]. A seed is a sample, clamped to
[0,1] and nearest-upsampled ×4 to the model's input size S.

The fit is cached on disk (one safetensors file per model and class set: ``mean`` (K,D) and the Cholesky
factor ``scale_tril`` (K,D,D) of Σ_k + jitter·I, float32) under :func:`cache_dir`, so later runs do not
reread the data set. At S = 64 the file holds 10 × 768² floats (23 MB); at S = 128, 10 × 3072² (377 MB).

Without data (``robustlens synthesize generate`` from the wheel): the package ships the Imagenette classes'
Gaussians at S = 128 in a low-rank form (:class:`LowRankGaussians`, :func:`shipped_seeds`): per class the top
``r`` principal directions of Σ_k scaled by their standard deviations, plus the remaining variance of each
value on the diagonal, float16 — 4 MB instead of 377. ``scripts/fit_shipped_seeds.py`` rebuilds the file and
prints the share of each class's variance the directions keep.
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


def _row(classes: list[int], cls: int) -> int:
    """The row of model label ``cls`` in a fit over ``classes`` (UserError when it is not covered)."""
    if cls not in classes:
        raise UserError(f"no seed distribution for class {cls}: the fit covers classes {classes}")
    return classes.index(cls)


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
        return _row(self.classes, cls)

    def sample(self, classes: torch.Tensor, *, size: int, generator: torch.Generator) -> torch.Tensor:
        """One seed per entry of ``classes`` (N,): (N,3,size,size) in [0,1], nearest-upsampled from ``side``."""
        rows = torch.tensor([self.row(int(c)) for c in classes.reshape(-1)], dtype=torch.long)
        z = torch.randn(len(rows), self.mean.shape[1], 1, generator=generator, dtype=torch.float64)
        x = self.mean[rows].double() + (self.scale_tril[rows].double() @ z).squeeze(2)  # (N,D)
        x = x.float().clamp(0, 1).reshape(len(rows), 3, self.side, self.side)
        return F.interpolate(x, size=(size, size), mode="nearest")

    def save(self, path: Path) -> Path:
        return _save(self, path, {"mean": self.mean, "scale_tril": self.scale_tril})

    @classmethod
    def load(cls, path: Path) -> "ClassGaussians":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            md = f.metadata()
            mean, tril = f.get_tensor("mean"), f.get_tensor("scale_tril")
        return cls(classes=json.loads(md["classes"]), side=int(md["side"]), mean=mean, scale_tril=tril,
                   counts=json.loads(md["counts"]), meta=json.loads(md["meta"]))


@dataclass
class LowRankGaussians:
    """Per class N(μ_k, F_k F_kᵀ + diag(d_k)): ``factor`` (K,D,r) the top-r principal directions of the fitted
    covariance times their standard deviations, ``residual_std`` (K,D) the square root of what they leave of
    each value's variance (at least the jitter's). Same use as :class:`ClassGaussians`."""

    classes: list[int]
    side: int
    mean: torch.Tensor
    factor: torch.Tensor
    residual_std: torch.Tensor
    counts: list[int]
    meta: dict

    def row(self, cls: int) -> int:
        return _row(self.classes, cls)

    def sample(self, classes: torch.Tensor, *, size: int, generator: torch.Generator) -> torch.Tensor:
        """One seed per entry of ``classes`` (N,): (N,3,size,size) in [0,1], nearest-resized from ``side``."""
        rows = torch.tensor([self.row(int(c)) for c in classes.reshape(-1)], dtype=torch.long)
        k = self.factor.shape[2]
        z = torch.randn(len(rows), k, 1, generator=generator, dtype=torch.float64)
        e = torch.randn(len(rows), self.mean.shape[1], generator=generator, dtype=torch.float64)
        x = (self.mean[rows].double() + (self.factor[rows].double() @ z).squeeze(2)
             + self.residual_std[rows].double() * e)
        x = x.float().clamp(0, 1).reshape(len(rows), 3, self.side, self.side)
        return F.interpolate(x, size=(size, size), mode="nearest")

    @classmethod
    def fit(cls, images: torch.Tensor, labels: torch.Tensor, *, rank: int, factor: int = DOWNSAMPLE,
            jitter: float = JITTER, meta: dict | None = None) -> "LowRankGaussians":
        """The top-``rank`` form of :func:`fit_class_gaussians` on the same inputs, from a thin SVD of each class's
        centred data (the eigenvectors of its sample covariance; float64), never forming the D×D covariance."""
        small = downsample(images, factor)
        flat = small.reshape(len(small), -1).double()  # (N,D)
        classes = sorted(int(c) for c in torch.unique(labels))
        means, factors, residuals, kept, counts = [], [], [], [], []
        for c in classes:
            xs = flat[labels == c]
            if len(xs) < 2:
                raise UserError(f"class {c} has {len(xs)} image(s): a covariance needs at least 2")
            mu = xs.mean(0)
            _, sv, vh = torch.linalg.svd(xs - mu, full_matrices=False)
            var = sv.square() / (len(xs) - 1)  # the nonzero eigenvalues of the sample covariance
            f = vh[:rank].T * (var[:rank] + jitter).sqrt()  # (D, r)
            total = (xs - mu).square().sum(0) / (len(xs) - 1) + jitter  # diag(Σ + jitter·I)
            means.append(mu.float())
            factors.append(f.float())
            residuals.append((total - f.square().sum(1)).clamp_min(jitter).sqrt().float())
            kept.append(float(f.square().sum() / total.sum()))
            counts.append(len(xs))
        return cls(classes=classes, side=small.shape[-1], mean=torch.stack(means), factor=torch.stack(factors),
                   residual_std=torch.stack(residuals), counts=counts,
                   meta={"factor": factor, "jitter": jitter, "rank": rank,
                         "variance_kept": [round(v, 4) for v in kept], **(meta or {})})

    def save(self, path: Path) -> Path:
        return _save(self, path, {"mean": self.mean, "factor": self.factor.half(),
                                  "residual_std": self.residual_std.half()})

    @classmethod
    def load(cls, path: Path) -> "LowRankGaussians":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            md = f.metadata()
            tensors = {k: f.get_tensor(k).float() for k in ("mean", "factor", "residual_std")}
        return cls(classes=json.loads(md["classes"]), side=int(md["side"]), counts=json.loads(md["counts"]),
                   meta=json.loads(md["meta"]), **tensors)


SeedDistribution = ClassGaussians | LowRankGaussians


def _save(fit: SeedDistribution, path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """Write a fit's ``tensors`` with its classes, side, counts and meta as safetensors metadata, atomically and
    readable by every user (the shipped file is package data)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={"classes": json.dumps(fit.classes), "side": str(fit.side),
                        "counts": json.dumps(fit.counts), "meta": json.dumps(fit.meta)})
    os.chmod(tmp, 0o644)
    tmp.replace(path)
    return path
SHIPPED_SEEDS = "imagenette128_seeds.safetensors"  # in robustlens/assets/


def shipped_seeds(model) -> LowRankGaussians | None:
    """The seed Gaussians shipped with the package for ``model``'s classes (the ten Imagenette classes, fitted
    at 128 px to Imagenette's training images), or None when the model has other classes."""
    from robustlens.models.small import IMAGENETTE_WNIDS

    if tuple(getattr(model, "class_wnids", ()) or ()) != IMAGENETTE_WNIDS:
        return None
    path = Path(__file__).resolve().parents[2] / "assets" / SHIPPED_SEEDS
    if not path.is_file():
        raise UserError(f"the package's seed statistics are missing ({path}): reinstall robustlens, or pass "
                        "--data folder:PATH to fit them to training images")
    return LowRankGaussians.load(path)


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
