"""Speed settings (robustlens.speed) and the engine's fast paths: correct results, toggles that work.

No test here asserts a timing: speed is measured by the scripts under benchmarks/ (docs/performance.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlens import speed


class Named(nn.Module):
    """A tiny conv classifier with a zoo-style ``name`` (the autocast policy keys on it)."""

    def __init__(self, name: str, seed: int = 0, classes: int = 5):
        super().__init__()
        self.name = name
        g = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, classes))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.eval()

    def forward(self, x):
        return self.net(x)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="precision"):
        speed.Speed(precision="fp16")
    with pytest.raises(ValueError, match="channels_last"):
        speed.Speed(channels_last="yes")
    assert speed.PLAIN.to_dict() == {"channels_last": False, "precision": "fp32", "compile": False, "fold_bn": False}


def test_autocast_policy_is_per_model_family():
    cpu = torch.device("cpu")
    resnet, lite, timm_resnet = Named("resnet50"), Named("efficientnet_lite0"), Named("timm:resnet50")
    assert speed.autocast_dtype(lite, "auto", cpu) is None  # measured unsafe: stays fp32
    assert speed.autocast_dtype(timm_resnet, "auto", cpu) is None  # only the measured torchvision families
    expected = torch.bfloat16 if speed.native_bf16(cpu) else None
    assert speed.autocast_dtype(resnet, "auto", cpu) is expected
    assert speed.autocast_dtype(Named("vgg16"), "auto", cpu) is expected
    for m in (resnet, lite):
        assert speed.autocast_dtype(m, "fp32", cpu) is None
        assert speed.autocast_dtype(m, "bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError):
        speed.autocast_dtype(resnet, "half", cpu)


def test_channels_last_model_restores_the_layout_and_keeps_values():
    model = Named("x")
    x = torch.rand(2, 3, 9, 9)
    before = model(x)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    with speed.channels_last_model(model):
        conv = model.net[0].weight
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        inside = model(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(inside, before, atol=1e-5)
    for n, p in model.named_parameters():
        assert p.is_contiguous()
        assert torch.equal(p, weights[n])


def test_channels_last_model_leaves_an_already_channels_last_model_alone():
    model = Named("x").to(memory_format=torch.channels_last)
    with speed.channels_last_model(model):
        pass
    assert model.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    with speed.channels_last_model(Named("y"), enabled=False) as m:
        assert m.net[0].weight.is_contiguous()


def test_channels_last_auto_needs_conv_and_images():
    conv, mlp = Named("x"), nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    assert speed.use_channels_last(conv, torch.rand(1, 3, 2, 2), "auto")
    assert not speed.use_channels_last(mlp, torch.rand(1, 3, 2, 2), "auto")
    assert not speed.use_channels_last(conv, torch.rand(1, 12), True)
    assert not speed.use_channels_last(conv, torch.rand(1, 3, 2, 2), False)


def test_use_sets_the_settings_for_the_block_only():
    assert speed.current() == speed.FAST
    with speed.use(speed.PLAIN):
        assert speed.current() == speed.PLAIN
        with speed.use(speed.Speed(precision="bf16")):
            assert speed.current().precision == "bf16"
        assert speed.current() == speed.PLAIN
    assert speed.current() == speed.FAST


def test_set_threads():
    old = torch.get_num_threads()
    try:
        assert speed.set_threads(1) == 1
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError):
            speed.set_threads(-1)
    finally:
        torch.set_num_threads(old)
