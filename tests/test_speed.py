"""Speed settings (robustlens.optim.speed) and the engine's fast paths: correct results, toggles that work.

No test here asserts a timing: speed is measured by the scripts under benchmarks/ (docs/performance.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlens.optim import fold, speed


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
    assert speed.use_channels_last(conv, torch.rand(1, 3, 64, 80), "auto")
    assert speed.use_channels_last(conv, torch.rand(1, 1, 28, 28), "auto")  # faster on MNIST too (torch 2.14)
    assert not speed.use_channels_last(conv, torch.rand(1, 28 * 28), "auto")  # not images
    assert not speed.use_channels_last(mlp, torch.rand(1, 3, 64, 64), "auto")
    assert not speed.use_channels_last(conv, torch.empty(1, 3, 224, 224, device="meta"), "auto")  # CPU only
    assert speed.use_channels_last(conv, torch.empty(1, 3, 224, 224, device="meta"), True)
    assert speed.use_channels_last(conv, torch.rand(1, 3, 2, 2), True)
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


# --- BatchNorm folding ------------------------------------------------------------------------------------

class Flaky(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.eval()

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y.mean((2, 3)) if float(y.sum()) > 0 else -y.mean((2, 3))


def _with_stats(model: nn.Module, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_copy_computes_the_same_and_leaves_the_model_alone(channels_last):
    model = _with_stats(Named("x"))
    x = torch.rand(3, 3, 9, 9)
    state = {k: (v.data_ptr(), v.clone()) for k, v in model.state_dict().items()}
    fast = fold.prepared(model, x, channels_last=channels_last)
    assert fast is not model
    called = [fast.get_submodule(n.target) for n in fast.graph.nodes if n.op == "call_module"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in called)  # both BatchNorms folded away
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=1e-5)
    xg = x.clone().requires_grad_(True)
    g_fast, = torch.autograd.grad(fast(xg).sum(), xg)
    g_model, = torch.autograd.grad(model(xg).sum(), xg)
    assert torch.allclose(g_fast, g_model, atol=1e-5)
    for k, v in model.state_dict().items():
        assert v.data_ptr() == state[k][0] and torch.equal(v, state[k][1])
    assert fold.prepared(model, x, channels_last=channels_last) is fast  # cached


def test_folded_copy_follows_weight_changes():
    model = _with_stats(Named("x"))
    x = torch.rand(2, 3, 9, 9)
    first = fold.prepared(model, x, channels_last=False)
    with torch.no_grad():
        model.net[0].weight.mul_(2)
    second = fold.prepared(model, x, channels_last=False)
    assert second is not first
    with torch.no_grad():
        assert torch.allclose(second(x), model(x), atol=1e-5)


def test_no_folding_in_training_mode_or_when_untraceable():
    x = torch.rand(2, 3, 9, 9)
    model = Named("x").train()
    assert fold.prepared(model, x, channels_last=False) is model
    flaky = Flaky()
    assert fold.prepared(flaky, x, channels_last=False) is flaky
    plain = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten())  # nothing to fold
    assert fold.prepared(plain, x, channels_last=True) is plain


@pytest.mark.parametrize("name", ["imagenette128_resnet", "resnet18"])
def test_zoo_classifiers_get_their_folded_copy(name):
    """The wrapper's Normalize must stay traceable: an untraceable wrapper silently turns folding off for
    every model (as the one-channel layout test inside Normalize.forward once did)."""
    from robustlens.models import create_model

    model = create_model(name, weights="none")
    x = torch.rand(2, 3, model.config.input_size, model.config.input_size)
    fast = fold.prepared(model, x, channels_last=True)
    assert fast is not model
    called = [fast.get_submodule(n.target) for n in fast.graph.nodes if n.op == "call_module"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in called)


@pytest.mark.parametrize("size", [16, 15])
@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_copy_moves_same_padding_into_the_convolution(size, channels_last):
    """EfficientNet-Lite's "same" convolutions pad explicitly (ZeroPad2d, one more after than before for stride
    2 on even sizes); the private copy moves symmetric padding into the convolution, and one-more-after padding
    too for depthwise convolutions (a zero row/column prepended to the kernel), but not for dense ones (the
    larger kernel costs them more than the copy): the same numbers, the model itself untouched."""
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

    def same(cin, cout, k, stride, groups=1):
        return Conv2dStaticSamePadding(cin, cout, k, stride, image_size=size, groups=groups, bias=False)

    model = _with_stats(nn.Sequential(
        same(3, 8, 3, 2), nn.BatchNorm2d(8), nn.ReLU6(),                        # dense: pads (0, 1) / (1, 1)
        same(8, 8, 5, 1, groups=8), nn.BatchNorm2d(8), nn.ReLU6(),              # symmetric (2, 2)
        same(8, 8, 5, 2, groups=8), nn.BatchNorm2d(8), nn.ReLU6(),              # depthwise (1, 2) / (2, 2)
        same(8, 4, 1, 1), nn.BatchNorm2d(4), nn.Flatten())).eval()
    x = torch.rand(3, 3, size, size)
    pads = [m.static_padding for m in model if isinstance(m, nn.Conv2d)]
    fast = fold.prepared(model, x, channels_last=channels_last)
    assert fast is not model
    called = [fast.get_submodule(n.target) for n in fast.graph.nodes if n.op == "call_module"]
    convs = [m.conv if isinstance(m, fold.ConvAct) else m for m in called if isinstance(m, (fold.ConvAct, nn.Conv2d))]
    assert len(convs) == 4
    explicit = [isinstance(m.static_padding, nn.ZeroPad2d) for m in convs]
    assert explicit == [size == 16, False, False, False]   # only the dense (0, 1) case keeps its ZeroPad2d
    assert sum(isinstance(m, fold.ConvAct) for m in fast.modules()) == (2 if size == 16 else 3)
    assert [tuple(m.kernel_size) for m in convs] == [(3, 3), (5, 5), (6, 6) if size == 16 else (5, 5), (1, 1)]
    assert [m.static_padding for m in model if isinstance(m, nn.Conv2d)] == pads  # the model keeps its own
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xg, xf = x.clone().requires_grad_(True), x.contiguous(memory_format=fmt).requires_grad_(True)
    out_model, out_fast = model(xg), fast(xf)
    assert torch.allclose(out_fast, out_model, atol=1e-5)
    g_model, = torch.autograd.grad(out_model[:, 0].sum(), xg)
    g_fast, = torch.autograd.grad(out_fast[:, 0].sum(), xf)
    assert torch.allclose(g_fast, g_model, atol=1e-5)


def test_convolution_and_activation_run_as_one_call_with_the_same_gradient(monkeypatch):
    """conv→BN→ReLU and conv→ReLU6 pairs become ConvAct (one oneDNN call on the CPU in float32); forward and
    input gradient equal the model's; autocast, or a build without the fused kernel, takes the two modules."""
    model = _with_stats(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), nn.ReLU6(),
        nn.Conv2d(8, 8, 1), nn.Hardtanh(-1.0, 2.0), nn.Conv2d(8, 4, 1), nn.Flatten())).eval()
    x = torch.rand(4, 3, 12, 12) * 4 - 2                      # values on both sides of every activation bound
    fast = fold.prepared(model, x, channels_last=True)
    assert sum(isinstance(m, fold.ConvAct) for m in fast.modules()) == 3
    assert fold._POINTWISE is not None                        # the CPU build ships oneDNN
    xm, xf = x.clone().requires_grad_(True), x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out_model, out_fast = model(xm), fast(xf)
    assert out_fast.grad_fn is not None and torch.allclose(out_fast, out_model, atol=1e-5)
    w = torch.randn_like(out_model)
    g_model, = torch.autograd.grad((out_model * w).sum(), xm)
    g_fast, = torch.autograd.grad((out_fast * w).sum(), xf)
    assert torch.allclose(g_fast, g_model, atol=1e-5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast(x).dtype == torch.bfloat16                # the convolutions ran under autocast
    monkeypatch.setattr(fold, "_POINTWISE", None)
    xf = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out_plain = fast(xf)
    assert torch.allclose(out_plain, out_model, atol=1e-5)
    g_plain, = torch.autograd.grad((out_plain * w).sum(), xf)
    assert torch.allclose(g_plain, g_model, atol=1e-5)


class ReluPools(nn.Module):
    """ReLU before max-pooling in every form fx records: a module (in place), F.relu, a method, a function."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3)
        self.r1, self.p1 = nn.ReLU(inplace=True), nn.MaxPool2d(2)
        self.p2, self.p3 = nn.MaxPool2d(3, stride=2, padding=1), nn.MaxPool2d(2, ceil_mode=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.p1(self.r1(self.c1(x)))
        x = self.p2(torch.nn.functional.relu(self.c2(x)))
        x = self.p3(self.c3(x).relu())
        return self.head(torch.relu(x).flatten(1))


@pytest.mark.parametrize("with_zeros", [False, True])
def test_relu_moves_after_max_pooling_with_identical_values_and_gradients(with_zeros):
    model = ReluPools().eval()
    x = torch.rand(6, 1, 16, 16) - 0.5
    if with_zeros:  # windows whose largest value is exactly 0 or that hold only negatives and zeros
        x = x.clamp_max(0)
        x[:, :, ::2, ::2] = 0
    fast = fold.prepared(model, x, channels_last=False)
    assert fast is not model
    order = [n.target if n.op != "call_module" else type(fast.get_submodule(n.target)).__name__
             for n in fast.graph.nodes if n.op in ("call_module", "call_function", "call_method")]
    pools = [i for i, t in enumerate(order) if t == "MaxPool2d"]
    assert len(pools) == 3 and all(order[i + 1] is torch.nn.functional.relu for i in pools), order
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    za, zb = model(xa), fast(xb)
    assert torch.equal(za, zb)
    ga, = torch.autograd.grad(za[:, 1].sum(), xa)
    gb, = torch.autograd.grad(zb[:, 1].sum(), xb)
    assert torch.equal(ga, gb)


class SharedInplaceRelu(nn.Module):
    """An in-place ReLU before a max-pooling whose input is read again afterwards (rectified, by the in-place op)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.relu, self.pool, self.head = nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        a = self.bn(self.conv(x))
        return self.head(self.pool(self.relu(a)).flatten(1)) + a.mean((1, 2, 3))[:, None]


def test_relu_whose_input_is_read_again_stays_before_its_pool():
    model = SharedInplaceRelu()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.rand(3, 1, 8, 8) - 0.5
    fast = fold.prepared(model, x, channels_last=False)
    assert fast is not model   # the BatchNorm is still folded: the copy is kept, without the swap
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x.clone()), atol=1e-5)


def test_padding_that_does_not_fit_is_left_alone():
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

    conv = Conv2dStaticSamePadding(3, 4, 3, 1, image_size=8, bias=False)
    conv.static_padding = nn.ZeroPad2d((0, 2, 1, 1))   # right pads two more than left: not a kernel shift
    model = _with_stats(nn.Sequential(conv, nn.BatchNorm2d(4), nn.Flatten())).eval()
    x = torch.rand(2, 3, 8, 8)
    fast = fold.prepared(model, x, channels_last=False)
    (inner,) = [m for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert isinstance(inner.static_padding, nn.ZeroPad2d) and tuple(inner.kernel_size) == (3, 3)
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=1e-5)


def test_folded_one_channel_classifier_keeps_channels_last():
    """A one-channel image in NHWC order stays NHWC through Normalize, in the folded copy as in the model."""
    from robustlens.models.classifier import Classifier
    from robustlens.models.preprocess import PreprocessConfig

    net = _with_stats(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())).eval()
    model = Classifier(net, PreprocessConfig(input_size=9, mean=(0.5,), std=(0.25,), channels=1),
                       name="one", weights="none", num_classes=4 * 7 * 7).eval()
    x = torch.rand(2, 1, 9, 9)
    fast = fold.prepared(model, x, channels_last=True)
    assert fast is not model
    seen = []
    conv = next(m for m in fast.modules() if isinstance(m, (fold.ConvAct, nn.Conv2d)))
    handle = conv.register_forward_pre_hook(lambda _m, args: seen.append(args[0].stride()))
    try:
        with torch.no_grad():
            out = fast(speed.in_format(x, torch.channels_last))
    finally:
        handle.remove()
    assert seen == [(81, 1, 9, 1)]  # NHWC strides reach the first convolution
    with torch.no_grad():
        assert torch.allclose(out, model(x), atol=1e-5)


# --- the engine under each setting --------------------------------------------------------------------------

SETTINGS = [speed.FAST, speed.PLAIN, speed.Speed(precision="bf16"), speed.Speed(precision="bf16", fold_bn=False),
            speed.Speed(channels_last=True, fold_bn=False), speed.Speed(channels_last=False, precision="bf16")]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.to_dict().items()))
def test_every_setting_gives_in_ball_results_and_restores_the_model(settings):
    from robustlens.recipes.attacks import pgd

    model = _with_stats(Named("resnet_tiny"))
    x = torch.rand(4, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    flags = [(p.requires_grad, p.is_contiguous()) for p in model.parameters()]
    eps = 8 / 255
    with speed.use(settings):
        adv = pgd(model, x, torch.tensor([0, 1, 2, 3]), eps=eps, step_size=2 / 255, steps=5, targeted=True,
                  random_start=False, early_stop=True)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert [(p.requires_grad, p.is_contiguous()) for p in model.parameters()] == flags
    assert not any(m.training for m in model.modules())


def test_toggles_reach_the_model():
    from robustlens.optim.engine import optimize
    from robustlens.optim.objectives import NegLogProb

    model = _with_stats(Named("resnet_tiny"))
    seen = []
    model.net[0].register_forward_pre_hook(
        lambda m, inp: seen.append((m.weight.is_contiguous(memory_format=torch.channels_last),
                                    torch.is_autocast_enabled("cpu"))))
    x = torch.rand(2, 3, 10, 10)
    for settings, expect in [(speed.Speed(channels_last=True, precision="bf16", fold_bn=False), (True, True)),
                             (speed.Speed(channels_last=False, precision="fp32", fold_bn=False), (False, False))]:
        seen.clear()
        with speed.use(settings):
            optimize(model, x, NegLogProb(torch.tensor([0, 1])), steps=2, step_size=0.01, progress=False)
        assert expect in seen  # the gradient steps ran with these settings


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_early_stop_never_lowers_success(precision):
    from robustlens.recipes.attacks import pgd

    model = _with_stats(Named("resnet_tiny", seed=3, classes=10), seed=3)
    x = torch.rand(16, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    targets = torch.arange(16) % 10
    kw = dict(eps=6 / 255, step_size=1 / 255, steps=12, targeted=True, random_start=False)
    with speed.use(speed.Speed(precision=precision)):
        with_stop = pgd(model, x, targets, early_stop=True, **kw)
        without = pgd(model, x, targets, early_stop=False, **kw)
    with torch.no_grad():  # judged in float32, as every benchmark does
        s_stop = model(with_stop).argmax(1) == targets
        s_all = model(without).argmax(1) == targets
    assert 0 < int(s_all.sum()) < 16  # the test means something: some but not all succeed
    assert int(s_stop.sum()) >= int(s_all.sum())


def test_reduced_precision_success_is_a_float32_verdict():
    from robustlens.optim.criteria import Targeted
    from robustlens.optim.engine import optimize
    from robustlens.optim.threat import Linf

    model = _with_stats(Named("resnet_tiny", seed=3, classes=10), seed=3)
    x = torch.rand(16, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    targets = torch.arange(16) % 10
    for early_stop in (True, False):
        res = optimize(model, x, Targeted(targets).objective("ce"), threat=Linf(6 / 255), steps=12,
                       step_size=1 / 255, early_stop=early_stop, criterion=Targeted(targets),
                       speed=speed.Speed(precision="bf16"), progress=False, history=False)
        with torch.no_grad():
            fp32 = model(res.x).argmax(1) == targets
        if early_stop:  # every success was confirmed in float32 when it happened
            assert bool(res.success.any()) and bool(fp32[res.success].all())
        else:  # the final float32 pass and re-check make every flag a float32 verdict
            assert torch.equal(res.success, fp32)


def test_bf16_early_stop_spends_no_float32_pass_on_examples_that_never_succeed():
    """With early stop only autocast successes are re-run in float32; without it the last iterate is
    evaluated in float32 (one forward pass at float32 cost)."""
    from robustlens.optim.criteria import Targeted
    from robustlens.optim.engine import optimize
    from robustlens.optim.threat import Linf

    model = _with_stats(Named("resnet_tiny", seed=3, classes=10), seed=3)
    autocast_on = []
    model.net[0].register_forward_pre_hook(lambda m, inp: autocast_on.append(torch.is_autocast_enabled("cpu")))
    x = torch.rand(4, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        targets = model(x).argmin(1)  # the least likely class: out of reach at ε = 0.1/255
    for early_stop in (True, False):
        autocast_on.clear()
        with speed.use(speed.Speed(precision="bf16", fold_bn=False)):  # hooks do not run in the folded copy
            res = optimize(model, x, Targeted(targets).objective("ce"), threat=Linf(0.1 / 255), steps=3,
                           step_size=0.05 / 255, early_stop=early_stop, criterion=Targeted(targets),
                           progress=False, history=False)
        assert not bool(res.success.any()) and len(autocast_on) >= 4
        assert all(autocast_on) if early_stop else not autocast_on[-1]


def test_one_channel_images_really_run_channels_last():
    """(N,1,H,W) is 'contiguous' in both layouts, so .contiguous(channels_last) kept NCHW strides and LeNet-5
    ran NCHW behind a channels-last flag (its 28x28 max-pool ~10x slower); in_format and Normalize keep NHWC."""
    from robustlens.models import create_model
    from robustlens.optim.prepare import prepare

    model = create_model("mnist_lenet5", "none").eval()
    x = torch.rand(4, 1, 28, 28)
    seen = {}
    with prepare(model, x, speed.Speed(channels_last=True), hooks=False) as p:
        hook = model.net.pool1.register_forward_hook(lambda m, i, o: seen.update(pool_in=i[0].stride()))
        out = p.exact(x)
        hook.remove()
    assert seen["pool_in"][1] == 1  # the first feature map is NHWC
    assert torch.allclose(out, model(x), atol=1e-5)
    v = speed.in_format(x, torch.channels_last)
    assert v.stride() == (784, 1, 28, 1) and torch.equal(v, x)
