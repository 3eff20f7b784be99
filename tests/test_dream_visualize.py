"""Parameterisations, transforms, DeepDream and feature visualisation on a tiny random conv net."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlens.errors import UserError
from robustlens.optim.engine import optimize
from robustlens.optim.objectives import Channel
from robustlens.optim.param import FFT, Pixel, color_matrix, frequency_scale, make_param
from robustlens.optim.threat import Linf
from robustlens.optim.transforms import compose, jitter, pad, rotate, scale, standard
from robustlens.recipes.dream import dream, octave_sizes
from robustlens.recipes.visualize import visualize


class Tiny(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        return self.net(x)


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("name", ["pixel", "fft"])
@pytest.mark.parametrize("decorrelate", [True, False])
@pytest.mark.parametrize("size", [(16, 16), (15, 22)])
def test_param_init_inverts_image(name, decorrelate, size):
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01
    p = make_param(name, decorrelate=decorrelate)
    img = p.image(p.init(x))
    assert img.shape == x.shape
    assert torch.allclose(img, x, atol=1e-5)


def test_param_details():
    m = color_matrix()
    assert torch.allclose(torch.linalg.vector_norm(m, dim=0).max(), torch.tensor(1.0))
    s = frequency_scale(16, 20)
    assert s.shape == (16, 11) and float(s.pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-5)
    assert float(s[0, 0]) == float(s.max())  # lowest frequency weighted most
    with pytest.raises(RuntimeError, match="init"):
        FFT().image(torch.zeros(1, 3, 4, 3, 2))
    with pytest.raises(ValueError):
        make_param("cppn")
    assert repr(Pixel(False)) == "Pixel(decorrelate=False)"


def test_transforms_are_seeded_shaped_and_differentiable():
    x = torch.rand(2, 3, 20, 20, requires_grad=True)
    t = standard()
    a = t(x, torch.Generator().manual_seed(1))
    b = t(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    g = torch.Generator().manual_seed(0)
    assert jitter(3)(x, g).shape == x.shape
    assert pad(4)(x, g).shape == (2, 3, 28, 28)
    assert scale([1.5])(x, g).shape == (2, 3, 30, 30)
    assert torch.allclose(rotate([0])(x, g), x)
    assert torch.allclose(rotate([360])(x, g), x, atol=1e-4)
    assert compose(pad(1), pad(1))(x, g).shape == (2, 3, 24, 24)


def test_param_needs_unconstrained_threat():
    with pytest.raises(ValueError, match="unconstrained"):
        optimize(Tiny(), torch.rand(1, 3, 8, 8), Channel("2", 0), threat=Linf(0.1), steps=1, step_size=0.1,
                 param=Pixel())


@pytest.mark.parametrize("param", ["fft", "pixel"])
def test_visualize_raises_the_channel(param):
    model = Tiny()
    res = visualize(model, "2:3", param=param, size=32, steps=40, lr=0.05, batch=2, progress=False)
    assert res.images.shape == (2, 3, 32, 32)
    assert float(res.images.min()) >= 0 and float(res.images.max()) <= 1
    assert bool((res.value > res.start_value).all())
    again = visualize(model, "2:3", param=param, size=32, steps=40, lr=0.05, batch=2, progress=False)
    assert torch.equal(res.images, again.images)
    assert no_hooks(model)
    assert res.to_dict()["settings"]["param"] == param


def test_visualize_checks_layer_and_channel():
    with pytest.raises(UserError, match="unknown layer"):
        visualize(Tiny(), "9:0", size=16, steps=1, progress=False)
    with pytest.raises(UserError, match="out of range"):
        visualize(Tiny(), "2:8", size=16, steps=1, progress=False)


def test_dream_amplifies_the_layer():
    model = Tiny()
    x = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    res = dream(model, x, "2", octaves=2, octave_scale=1.4, steps=8, step_size=0.02, progress=False)
    assert res.image.shape == x.shape and res.octave_sizes == [(34, 34), (48, 48)]
    assert float(res.image.min()) >= 0 and float(res.image.max()) <= 1

    def energy(img):
        with torch.no_grad():
            return float(model.net[:3](img).pow(2).mean())

    assert energy(res.image) > 1.2 * energy(x)
    assert {h["octave"] for h in res.history} == {0, 1}
    assert no_hooks(model)
    d = res.to_dict()
    assert d["final_mean_square_activation"] > 0


def test_dream_checks_input():
    x = torch.rand(1, 3, 48, 48)
    with pytest.raises(UserError, match="smallest octave"):
        dream(Tiny(), x, "2", octaves=6)
    with pytest.raises(UserError, match="unknown layer"):
        dream(Tiny(), x, "nope")
    with pytest.raises(UserError, match="steps"):
        dream(Tiny(), x, "2", steps=0)
    assert octave_sizes(100, 50, 3, 2.0) == [(25, 12), (50, 25), (100, 50)]
