"""robustlens.optim.local: re-evaluating a network after one window of its input changed must give the model's
own logits (checked here in float64 against whole forward passes), keep its cache right through accepts and
drops, and refuse what it cannot do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlens.models.classifier import Normalize
from robustlens.models.small import LeNet5
from robustlens.optim.local import LocalEvaluator
from robustlens.robust.autoattack import square


class Normalised(nn.Module):
    def __init__(self, net: nn.Module, channels: int):
        super().__init__()
        self.normalize = Normalize((0.45,) * channels, (0.25,) * channels)
        self.net = net

    def forward(self, x):
        return self.net(self.normalize(x))


def _lenet() -> nn.Module:
    return Normalised(LeNet5(), 1)


def _odd() -> nn.Module:
    """Strides, dilation, padded max-pooling, average pooling, BatchNorm, an in-place activation, a depthwise
    convolution, then a global pooling (not local: the tail starts there)."""
    bn = nn.BatchNorm2d(8)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), bn, nn.LeakyReLU(0.1, inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8), nn.ReLU(inplace=True),
        nn.AvgPool2d(2), nn.Conv2d(8, 12, 1), nn.Tanh(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5))
    return Normalised(net, 3)


def _plain_stride() -> nn.Module:
    """A strided convolution whose window reaches past the last rows (a floor-mode drop) and no padding."""
    return nn.Sequential(nn.Conv2d(2, 6, 4, stride=3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.LazyLinear(4))


CASES = [(_lenet, (1, 28, 28)), (_odd, (3, 23, 19)), (_plain_stride, (2, 26, 31))]


def _model(make, shape) -> nn.Module:
    torch.manual_seed(0)
    m = make()
    m(torch.rand(1, *shape))  # materialise lazy layers
    return m.double().eval()


@pytest.mark.parametrize("make,shape", CASES, ids=["lenet", "odd", "plain-stride"])
def test_windows_give_the_models_logits_through_accepts_and_drops(make, shape):
    model = _model(make, shape)
    gen = torch.Generator().manual_seed(1)
    n, (c, h, w) = 12, shape
    current = torch.rand(n, *shape, generator=gen, dtype=torch.float64)
    ev = LocalEvaluator.build(model, current[:1])
    assert ev is not None
    assert any(step.crop is not None for step in ev._plan(1, current.device).steps)  # small windows run locally
    with torch.no_grad():
        assert torch.allclose(ev.reset(current), model(current), atol=1e-10, rtol=0)
        for s in list(range(1, min(h, w))) * 2:
            top = torch.randint(0, h - s + 1, (len(current),), generator=gen)
            left = torch.randint(0, w - s + 1, (len(current),), generator=gen)
            cand = current.clone()
            for b in range(len(current)):
                cand[b, :, top[b]:top[b] + s, left[b]:left[b] + s] = torch.rand(c, s, s, generator=gen,
                                                                                   dtype=torch.float64)
            got = ev.try_window(cand, top, left, s)
            assert torch.allclose(got, model(cand), atol=1e-10, rtol=0), s
            accepted = torch.rand(len(current), generator=gen) < 0.5
            ev.commit(accepted)
            current[accepted] = cand[accepted]
            if s == 3 and len(current) > 4:  # some rows leave, in a new order
                keep = torch.tensor([4, 0, 2] + list(range(5, len(current))))
                ev.keep(keep)
                current = current[keep]
        # an empty change: the cache itself must equal the accepted points
        top = torch.zeros(len(current), dtype=torch.long)
        assert torch.allclose(ev.try_window(current, top, top, 2), model(current), atol=1e-10, rtol=0)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        a = torch.relu(self.conv1(x))
        return self.head((a + self.conv2(a)).flatten(1))


class _TwoUses(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3)) + x.mean((2, 3))


class _Branchy(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :3] if x.sum() > 0 else -x.flatten(1)[:, :3]


def test_a_residual_net_is_local_up_to_its_first_fork():
    model = _Residual().double().eval()
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    assert LocalEvaluator.build(model, x[:1]) is None   # conv1 is 19% of its multiply-adds: not worth it
    ev = LocalEvaluator.build(model, x[:1], min_share=0.0)
    assert ev is not None and len(ev.groups) == 1   # conv1 + ReLU; the rest runs whole
    cand = x.clone()
    cand[:, :, 2:5, 3:6] = 0.5
    with torch.no_grad():
        ev.reset(x)
        got = ev.try_window(cand, torch.full((5,), 2), torch.full((5,), 3), 3)
        assert torch.allclose(got, model(cand), atol=1e-12, rtol=0)


@pytest.mark.parametrize("model", [_TwoUses(), _Branchy(), nn.Sequential(nn.Flatten(), nn.Linear(64, 3))],
                         ids=["input-used-twice", "untraceable", "no-local-layer"])
def test_what_it_cannot_do_is_refused(model):
    assert LocalEvaluator.build(model.eval(), torch.rand(1, 1, 8, 8)) is None


def test_square_with_the_evaluator_is_square_without_it():
    model = _model(_lenet, (1, 28, 28))
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(16, 1, 28, 28, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % 10  # three already "misclassified": left alone by both
    local = square(model, x, y, eps=0.1, queries=300, seed=5)   # "auto": the evaluator is built
    whole = square(model, x, y, eps=0.1, queries=300, seed=5, evaluator=None)
    assert LocalEvaluator.build(model, x[:1]) is not None
    assert torch.equal(local, whole)
    assert not torch.equal(local, x)   # it did move


def test_square_l2_refuses_an_evaluator():
    model = _model(_lenet, (1, 28, 28))
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    ev = LocalEvaluator.build(model, x[:1])
    with pytest.raises(ValueError, match="L∞"):
        square(model, x, torch.zeros(2, dtype=torch.long), norm="l2", eps=1.0, queries=5, evaluator=ev)
