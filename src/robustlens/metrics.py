"""How far an image moved: perturbation norms and image-quality figures, per example.

Inputs are batches (N,C,H,W) in [0,1]; every function returns a (N,) tensor.
"""

from __future__ import annotations

import math

import torch

from robustlens.optim._tensor import flat


def linf(delta: torch.Tensor) -> torch.Tensor:
    return flat(delta).float().abs().amax(1)


def l2(delta: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(flat(delta).float(), dim=1)


def l1(delta: torch.Tensor) -> torch.Tensor:
    return flat(delta).float().abs().sum(1)


def l0(delta: torch.Tensor, tol: float = 0.5 / 255) -> torch.Tensor:
    """Number of values that changed by more than ``tol`` (half an 8-bit level by default)."""
    return (flat(delta).float().abs() > tol).sum(1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical images."""
    mse = flat(x - y).float().pow(2).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse)


def _blur_matrix(n: int, size: int, sigma: float, device, dtype) -> torch.Tensor:
    """(n − size + 1, n): row i holds the normalised 1-D Gaussian of ``size`` taps at columns i … i + size − 1,
    so ``A @ t`` is the valid 1-D Gaussian filter of ``t`` along its first dimension."""
    r = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    out = n - size + 1
    a = torch.zeros(out, n, device=device, dtype=dtype)
    rows = torch.arange(out, device=device)[:, None]
    a[rows, rows + torch.arange(size, device=device)[None, :]] = g
    return a


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, *, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with an 11×11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03,
    population (not sample) covariances, averaged over channels and the valid (unpadded) positions: the
    settings of ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    use_sample_covariance=False)``.

    In float64 (the variances are differences of nearly equal means). The 2-D Gaussian is separable, so each
    blur is two matrix products with banded matrices (rows, then columns), all five blurred maps in one batch:
    a float64 11×11 convolution has no fast kernel on the CPU and took seconds for a batch of 224 px images."""
    x, y = x.double(), y.double()
    c = x.shape[1]
    size = min(window, x.shape[-1], x.shape[-2])
    size -= (size + 1) % 2  # odd
    rows = _blur_matrix(x.shape[-2], size, sigma, x.device, x.dtype)           # (H', H)
    cols = _blur_matrix(x.shape[-1], size, sigma, x.device, x.dtype).T         # (W, W')
    maps = torch.cat([x, y, x * x, y * y, x * y], 1)                          # (N, 5C, H, W)
    mx, my, bxx, byy, bxy = (rows @ maps @ cols).split(c, 1)                  # each (N, C, H', W')
    sxx, syy, sxy = bxx - mx * mx, byy - my * my, bxy - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.reshape(s.shape[0], -1).mean(1).float()


def finite_or_none(v: float) -> float | None:
    """JSON-safe float: ``None`` for inf/nan (e.g. the PSNR of identical images)."""
    return v if math.isfinite(v) else None
