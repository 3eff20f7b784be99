"""Perturbation norms and image-quality figures against independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustlens.metrics import finite_or_none, l0, l1, l2, linf, psnr, ssim


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 40, 50, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ours = ssim(x, y)
    for i in range(2):
        ref = structural_similarity(x[i].permute(1, 2, 0).numpy(), y[i].permute(1, 2, 0).numpy(), channel_axis=2,
                                    data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert float(ours[i]) == pytest.approx(float(ref), abs=1e-5)
    assert torch.allclose(ssim(x, x), torch.ones(2))


def test_psnr_and_norms():
    x = torch.zeros(1, 3, 4, 4)
    y = x.clone()
    y[0, 0, 0, 0] = 0.5
    y[0, 1, 2, 3] = -0.25
    assert float(psnr(x, y)) == pytest.approx(10 * math.log10(1 / ((0.25 + 0.0625) / 48)))
    assert math.isinf(float(psnr(x, x))) and finite_or_none(float(psnr(x, x))) is None
    d = y - x
    assert float(linf(d)) == 0.5 and float(l1(d)) == 0.75 and int(l0(d)) == 2
    assert float(l2(d)) == pytest.approx(np.hypot(0.5, 0.25))
