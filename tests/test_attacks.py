"""attack(): batching of targets, 8-bit quantisation inside the ball, re-checked success, JSON; the corgi
targets on the default model (skipped without ../shared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from robustlens.optim.criteria import Targeted, Untargeted
from robustlens.optim.objectives import CWMargin, LogProb, NegLogProb
from robustlens.optim.steps import madry_step_size
from robustlens.optim.threat import L2, Linf
from robustlens.recipes.attacks import attack, pgd, quantize_in_ball

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared").resolve()
CORGI = SHARED / "data" / "images" / "corgi.jpg"


class Tiny(nn.Module):
    """A small random conv net with a ``class_name`` like the zoo's classifiers."""

    def __init__(self, seed: int = 0, classes: int = 6):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                 nn.Linear(32, classes))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        return self.net(x)

    def class_name(self, i: int) -> str:
        return f"class{i}"


def grid_image(seed: int, n: int = 1, size: int = 12) -> torch.Tensor:
    """Images on the 8-bit grid, like every image read from a file."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float() / 255


def test_several_targets_are_one_batch_and_results_are_8bit_in_the_ball():
    model = Tiny().eval()
    x = grid_image(0)
    res = attack(model, x, target=[1, 2, 3], eps=0.1, steps=40, progress=False)
    assert res.adversarial.shape == (3, 3, 12, 12)
    assert res.targets.tolist() == [1, 2, 3]
    assert torch.equal(res.adversarial * 255, torch.round(res.adversarial * 255))  # on the 8-bit grid
    assert bool(Linf(0.1).contains(res.adversarial, res.original).all())
    with torch.no_grad():
        top1 = model(res.adversarial).argmax(1)
    assert torch.equal(res.success, top1 == res.targets)  # success is checked on the returned images
    assert [r[0].index for r in res.after] == top1.tolist()
    d = json.loads(json.dumps(res.to_dict()))
    assert len(d["results"]) == 3 and d["settings"]["norm"] == "linf"
    assert d["results"][0]["before"][0]["name"].startswith("class")


def test_untargeted_defaults_to_clean_prediction():
    model = Tiny(1).eval()
    x = grid_image(1, n=4)
    res = attack(model, x, eps=0.2, steps=20, progress=False)
    with torch.no_grad():
        assert torch.equal(res.labels, model(x).argmax(1))
    assert res.targets is None and not res.targeted
    assert res.success_rate() > 0


def test_quantize_in_ball_keeps_the_constraint():
    x0 = grid_image(2, n=4)
    g = torch.Generator().manual_seed(2)
    for threat in [Linf(3.5 / 255), L2(0.05)]:
        adv = threat.project(x0 + 0.1 * torch.randn(x0.shape, generator=g), x0)
        q = quantize_in_ball(adv, x0, threat)
        assert bool(threat.contains(q, x0).all())
        assert torch.equal(q * 255, torch.round(q * 255))


def test_losses_and_step_size_rule():
    t = torch.tensor([1])
    assert isinstance(Targeted(t).objective("ce"), NegLogProb)
    assert isinstance(Untargeted(t).objective("ce"), LogProb)
    assert isinstance(Targeted(t).objective("cw"), CWMargin)
    with pytest.raises(ValueError):
        Targeted(t).objective("hinge")
    assert madry_step_size(4 / 255, 50) == pytest.approx(0.2 / 255)


def test_attack_argument_checks():
    model, x = Tiny().eval(), grid_image(3)
    with pytest.raises(ValueError, match="eps"):
        attack(model, x, eps=-0.1, progress=False)
    with pytest.raises(ValueError, match="steps"):
        attack(model, x, steps=0, progress=False)
    with pytest.raises(ValueError, match="targets for"):
        attack(model, grid_image(3, n=2), target=[1, 2, 3], progress=False)


def test_pgd_targeted_reaches_targets_on_tiny_model():
    model = Tiny(4).eval()
    x = grid_image(4, n=6)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    adv = pgd(model, x, y, eps=0.3, step_size=0.05, steps=30, targeted=True)
    with torch.no_grad():
        assert float((model(adv).argmax(1) == y).float().mean()) >= 0.8


@pytest.mark.slow
def test_corgi_targets_survive_png_round_trip(tmp_path):
    """Must-show 1: Corgi -> Tarantula (76) and Tiger cat (282), L∞ 4/255, ≤ 50 steps, default model; the
    saved PNGs, read back and classified, still give the targets."""
    if not CORGI.exists():
        pytest.skip(f"needs {CORGI} (the shared data folder beside the repository)")
    from robustlens.images import load_image, load_pil, save_image
    from robustlens.models import create_model
    from robustlens.models.classify import classify
    from robustlens.models.preprocess import preprocess

    model = create_model()
    x = preprocess(load_pil(CORGI), model.config).unsqueeze(0)
    assert classify(model, x)[0][0].index == 263
    res = attack(model, x, target=[76, 282], eps=4 / 255, steps=50, progress=False)
    assert res.success.tolist() == [True, True]
    assert res.steps_run <= 50 * 3  # at most two resumptions after rounding
    assert float(res.linf.max()) <= 4 / 255 + 1e-6
    for i, t in enumerate([76, 282]):
        path = save_image(res.adversarial[i], tmp_path / f"adv_{t}.png")
        again = load_image(path).unsqueeze(0)
        assert torch.equal(again, res.adversarial[i:i + 1])
        assert classify(model, again)[0][0].index == t
