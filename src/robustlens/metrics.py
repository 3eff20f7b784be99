"""How far an image moved: perturbation norms and image-quality figures, per example.

Inputs are batches (N,C,H,W) in [0,1]; every function returns a (N,) tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    r = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, *, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with an 11×11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03,
    population (not sample) covariances, averaged over channels and the valid (unpadded) positions: the
    settings of ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    use_sample_covariance=False)``."""
    x, y = x.double(), y.double()
    c = x.shape[1]
    size = min(window, x.shape[-1], x.shape[-2])
    size -= (size + 1) % 2  # odd
    w = _gaussian_window(size, sigma, c, x.device, x.dtype)

    def blur(t):
        return F.conv2d(t, w, groups=c)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.reshape(s.shape[0], -1).mean(1).float()


def finite_or_none(v: float) -> float | None:
    """JSON-safe float: ``None`` for inf/nan (e.g. the PSNR of identical images)."""
    return v if math.isfinite(v) else None
