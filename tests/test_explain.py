"""robustlens.explain: attribution methods against autograd, hand computations and the references (Captum,
pytorch-grad-cam), IG completeness, sanity checks that leave the model alone, faithfulness curves, the CLI."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlens.explain import (
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    deletion_insertion,
    sanity_check,
)
from robustlens.explain.cam import default_layer
from robustlens.explain.sanity import randomisation_units, randomised
from robustlens.optim import speed

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


class Tiny(nn.Module):
    """(N,3,16,16) → (N,5): conv, BatchNorm, activation, conv, pool, linear. ``smooth``: Tanh (no kinks)."""

    def __init__(self, smooth: bool = False):
        super().__init__()
        act = nn.Tanh if smooth else nn.ReLU
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), act(),
                                      nn.Conv2d(6, 8, 3, stride=2, padding=1), act())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def tiny(smooth: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = Tiny(smooth)
    with torch.no_grad():
        bn = m.features[1]
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return m.eval()


def images(n: int = 3, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def autograd_saliency(model, x, t):
    xi = x.clone().requires_grad_(True)
    model(xi).gather(1, t.view(-1, 1)).sum().backward()
    return xi.grad


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("settings", [speed.PLAIN, speed.FAST], ids=["plain", "fast"])
def test_saliency_equals_autograd(settings):
    m, x = tiny(), images()
    t = torch.tensor([0, 3, 4])
    with speed.use(settings):
        a = Saliency(m).attribute(x, t)
    assert a.maps.shape == x.shape and a.targets.tolist() == [0, 3, 4]
    assert rel(a.maps, autograd_saliency(m, x, t)) < 1e-5


def test_default_target_is_top1_and_gradxinput():
    m, x = tiny(), images()
    top1 = m(x).argmax(1)
    a = Saliency(m).attribute(x)
    assert torch.equal(a.targets, top1)
    gx = __import__("robustlens.explain", fromlist=["GradientXInput"]).GradientXInput(m).attribute(x)
    assert rel(gx.maps, x * autograd_saliency(m, x, top1)) < 1e-5


def test_smoothgrad_sigma_zero_is_saliency():
    m, x = tiny(), images()
    sg = SmoothGrad(m).attribute(x, 2, samples=4, sigma=0.0)
    assert rel(sg.maps, Saliency(m).attribute(x, 2).maps) < 1e-6


def test_smoothgrad_is_mean_of_noisy_gradients():
    m, x = tiny(), images(2)
    t = torch.tensor([1, 2])
    noise = 0.1 * torch.randn(2, 3, *x.shape[1:], generator=torch.Generator().manual_seed(3))
    sg = SmoothGrad(m).attribute(x, t, noise=noise, squared=True).maps
    by_hand = torch.stack([autograd_saliency(m, x + noise[:, s], t) ** 2 for s in range(3)]).mean(0)
    assert rel(sg, by_hand) < 1e-5


FLOAT32_FLOOR = 1e-6  # completeness errors this small are float32 rounding of logits of order 1, in either direction


def test_ig_completeness_converges_gauss_legendre_fastest():
    m, x = tiny(smooth=True), images(2)
    t = torch.tensor([0, 1])
    err = {}
    for rule in ("riemann_right", "riemann_middle", "gausslegendre"):
        err[rule] = [float(IntegratedGradients(m).attribute(x, t, steps=k, rule=rule, baseline="blur")
                           .completeness_error.abs().max()) for k in (2, 8, 32)]
    for rule, e in err.items():  # each rule converges, down to float32 rounding (below 1e-6 the error is noise)
        assert e[1] < e[0] and (e[2] < e[1] or max(e[1], e[2]) < FLOAT32_FLOOR), (rule, e)
    assert err["gausslegendre"][1] < err["riemann_middle"][2] < err["riemann_right"][2]
    assert err["gausslegendre"][2] < 1e-5


def test_ig_single_step_black_is_gradient_times_input():
    m, x = tiny(), images()
    t = torch.tensor([0, 1, 2])
    ig = IntegratedGradients(m).attribute(x, t, steps=1, rule="riemann_right", baseline="black")
    assert rel(ig.maps, x * autograd_saliency(m, x, t)) < 1e-5


def test_gradcam_matches_hand_computation():
    m, x = tiny(), images(2)
    t = torch.tensor([4, 1])
    assert default_layer(m, x) == "features"
    store = {}
    h = m.features.register_forward_hook(lambda _m, _i, out: store.update(a=out))
    score = m(x).gather(1, t.view(-1, 1)).sum()
    h.remove()
    a = store["a"]                                                          # (N,8,8,8)
    (g,) = torch.autograd.grad(score, a)
    cam = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    want = F.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)
    got = GradCAM(m).attribute(x, t)
    assert got.maps.shape == (2, 1, 16, 16) and bool((got.maps >= 0).all())
    assert got.info["layer"] == "features"
    assert rel(got.maps, want.detach()) < 1e-6
    pp = GradCAMPlusPlus(m, "features.2").attribute(x, t).maps
    assert pp.shape == (2, 1, 16, 16) and bool((pp >= 0).all())


def test_unknown_layer_and_bad_input_are_user_errors():
    from robustlens.errors import UserError

    m = tiny()
    with pytest.raises(UserError, match="did you mean"):
        GradCAM(m, "feature")
    with pytest.raises(UserError):
        Saliency(m).attribute(images() * 3)
    with pytest.raises(UserError):
        IntegratedGradients(m).attribute(images(), steps=4, rule="simpson")


def test_guided_backprop_leaves_model_alone_and_differs_from_gradient():
    m, x = tiny(), images()
    before = copy.deepcopy(m.state_dict())
    gb = GuidedBackprop(m).attribute(x, 0).maps
    assert all(isinstance(mod, nn.ReLU) for mod in (m.features[2], m.features[4]))
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
    assert rel(gb, Saliency(m).attribute(x, 0).maps) > 1e-2


def test_sanity_check_never_modifies_the_model():
    m, x = tiny(), images(2)
    before = copy.deepcopy(m.state_dict())
    units = randomisation_units(m)
    assert units == ["fc", "features.3", "features.1", "features.0"]        # with parameters, output side first
    r = randomised(m, units[:1])
    assert not torch.equal(r.fc.weight, m.fc.weight) and torch.equal(r.features[0].weight, m.features[0].weight)
    res = sanity_check(m, x, methods="saliency,gradcam")
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
    assert res.stages == units and set(res.verdict) == {"saliency", "gradcam"}
    rows = res.spearman["cascading"]["saliency"]
    assert len(rows) == len(units) and all(len(r) == 2 and all(-1 <= v <= 1 for v in r) for r in rows)
    json.dumps(res.to_dict(), allow_nan=False)


def test_deletion_insertion_end_points():
    m, x = tiny(), images(2)
    t = torch.tensor([0, 1])
    c = deletion_insertion(m, x, Saliency(m).attribute(x, t).maps, t, points=5)
    with torch.no_grad():
        p = m(x).softmax(1)[[0, 1], t]
        p_black = m(torch.zeros_like(x)).softmax(1)[[0, 1], t]
    assert np.allclose(c.deletion[:, 0], p.numpy(), atol=1e-6) and np.allclose(c.insertion[:, -1], p.numpy(), atol=1e-6)
    assert np.allclose(c.deletion[:, -1], p_black.numpy(), atol=1e-6)
    assert c.deletion_auc.shape == (2,)


@pytest.mark.slow  # imports Captum and pytorch-grad-cam (cv2); the comparisons themselves take a second
def test_matches_captum_and_pytorch_grad_cam():
    pytest.importorskip("captum")
    pytest.importorskip("pytorch_grad_cam")
    sys.path.insert(0, str(BENCH))
    try:
        from explain_vs_references import vs_captum, vs_grad_cam
    finally:
        sys.path.remove(str(BENCH))
    m, x = tiny(), images(2)
    t = torch.tensor([0, 4])
    with speed.use(speed.PLAIN):
        cap = vs_captum(m, x, t, steps=6, samples=3)
        cam = vs_grad_cam(m, x, t, "features")
    like_for_like = {k: v for k, v in {**cap, **cam}.items()
                     if not any(s in k for s in ("completeness", "_as_is")) and k != "gradcampp"}
    assert len(like_for_like) >= 12
    assert max(like_for_like.values()) <= 1e-4, like_for_like
    assert cap["ig_riemann_trapezoid_black_as_is"] > 0.1          # Captum's trapezoid weights sum to (n-1)/n


def _run(argv, capsys):
    from robustlens.cli.main import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_strict_and_files(tmp_path, capsys):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.fromarray((np.random.default_rng(0).random((70, 70, 3)) * 255).astype("uint8")).save(img)
    out = tmp_path / "out"
    code, stdout, err = _run(["explain", str(img), "--models", "imagenette_resnet_standard", "--method",
                              "saliency,ig,gradcam", "--steps", "4", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    d = json.loads(stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    m = d["models"][0]
    assert set(m["methods"]) == {"saliency", "ig", "gradcam"} and len(m["methods"]["ig"]["completeness_error"]) == 1
    assert (out / "result.json").exists() and (out / "a_explain.png").exists()


@pytest.mark.parametrize("args", [["missing.png"], ["{img}", "--method", "nope"], ["{img}", "--steps", "0"],
                                  ["{img}", "--models", "no_such_model"], ["{img}", "--target", "no such class"]])
def test_cli_bad_input_one_line_exit_2(tmp_path, capsys, args):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (40, 40)).save(img)
    out = tmp_path / "out"
    argv = ["explain", *[a.format(img=img) for a in args], "--out", str(out)]
    if "--models" not in args:
        argv += ["--models", "imagenette_resnet_standard"]
    code, stdout, err = _run(argv, capsys)
    assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_ig_chunking_does_not_change_the_result():
    m, x = tiny(), images()
    t = torch.tensor([0, 1, 2])
    whole = IntegratedGradients(m, batch_size=64).attribute(x, t, steps=8)
    split = IntegratedGradients(m, batch_size=3).attribute(x, t, steps=8)       # steps of one image split
    assert rel(split.maps, whole.maps) < 1e-5
    assert torch.allclose(split.completeness_error, whole.completeness_error, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny", "imagenette128_resnet", "efficientnet_lite0"])
def test_ig_through_the_affine_start_is_exact_in_float64(name, monkeypatch):
    """IG sums gradients at the first convolution's output and pulls the sum back once per image
    (explain._affine). In float64 (no ReLU kink flips from float32 rounding) it equals IG through the whole
    network on the folded copy and on the model itself (speed.PLAIN) to ~1e-15."""
    from robustlens.explain import _affine
    from robustlens.models import create_model
    from robustlens.optim import fold

    if name == "tiny":
        m, size = tiny(), 16
    else:
        m = create_model(name, weights="none")
        size = 64
        with torch.no_grad():       # BatchNorm statistics that make folding do something
            for bn in (b for b in m.modules() if isinstance(b, nn.BatchNorm2d)):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)
    m = m.double()
    x, t = images(2, size).double(), torch.tensor([1, 3])
    parts = _affine.split(fold.prepared(m, x, channels_last=True))
    assert parts is not None
    called = [n for n in parts.prefix.graph.nodes if n.op == "call_module"]
    assert len(called) == 1 and isinstance(parts.prefix.get_submodule(called[0].target), nn.Conv2d)
    ig = IntegratedGradients(m, batch_size=8)
    split = ig.attribute(x, t, steps=6)
    with monkeypatch.context() as patch:
        patch.setattr(_affine, "split", lambda run: None)
        whole = ig.attribute(x, t, steps=6)
    with speed.use(speed.PLAIN):
        plain = ig.attribute(x, t, steps=6)
    assert rel(split.maps, whole.maps) < 1e-12 and rel(split.maps, plain.maps) < 1e-12
    assert torch.allclose(split.completeness_error, plain.completeness_error, atol=1e-12)


def test_no_affine_split_where_none_can_be_proved():
    from robustlens.explain import _affine
    from robustlens.optim import fold

    class Squash(nn.Module):          # a nonlinearity before the first convolution: the prefix is empty
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(torch.tanh(x))).mean((2, 3))

    x = images(1)
    assert _affine.split(fold.prepared(Squash().eval(), x, channels_last=False)) is None
    assert _affine.split(tiny()) is None                       # not a torch.fx copy


@pytest.mark.parametrize("form", ["keyword", "positional", "method"])
def test_no_affine_split_when_the_rest_writes_into_its_input(form):
    """The split's input is the leaf whose gradient is taken; an in-place activation right after the first
    convolution (functional or method form, which the fused copy leaves as it is) would write into it. IG then
    takes the whole-network path and still equals plain IG."""
    from robustlens.explain import _affine
    from robustlens.optim import fold

    act = {"keyword": lambda t: F.relu(t, inplace=True), "positional": lambda t: F.relu(t, True),
           "method": lambda t: t.relu_()}[form]

    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 5)

        def forward(self, x):
            return self.fc(act(self.bn(self.conv(x))).mean((2, 3)))

    m, x, t = InPlace().eval(), images(2), torch.tensor([0, 1])
    assert _affine.split(fold.prepared(m, x, channels_last=False)) is None
    fast = IntegratedGradients(m).attribute(x, t, steps=4)
    with speed.use(speed.PLAIN):
        plain = IntegratedGradients(m).attribute(x, t, steps=4)
    assert rel(fast.maps, plain.maps) < 1e-5


def test_explain_api_two_models_to_dict(tmp_path):
    from robustlens.explain import explain

    x = images(1, 64)
    res = explain(x, models="imagenette_resnet_standard,imagenette_resnet_robust", methods="saliency,gradcam",
                  target="tench", out=tmp_path / "o")
    d = res.to_dict()
    assert [m["targets"][0]["name"] for m in d["models"]] == ["tench", "tench"]
    assert d["files"] == ["image0_explain.png"] and (tmp_path / "o" / "image0_explain.png").exists()
    json.dumps(d, allow_nan=False)
