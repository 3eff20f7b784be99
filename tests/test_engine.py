"""The optimisation engine: per-example independence, best-iterate bookkeeping, early stop, restarts, seeds,
frozen parameters restored, hooks removed, history."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlens.optim.criteria import Targeted, Untargeted
from robustlens.optim.engine import optimize
from robustlens.optim.objectives import FeatureDistance, NegLogProb, Outputs
from robustlens.optim.prepare import frozen
from robustlens.optim.speed import Speed
from robustlens.optim.starts import RandomInThreat
from robustlens.optim.steps import Adam, SteepestStep
from robustlens.optim.threat import L2, Linf, Unconstrained


def tiny_model(seed: int = 0, classes: int = 5) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                      nn.Linear(16, classes))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return m.eval()


def images(seed: int, n: int, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_each_example_moves_as_if_alone():
    model = tiny_model()
    x = images(0, 4)
    targets = torch.tensor([0, 1, 2, 3])
    kw = dict(threat=Linf(0.1), steps=5, step_size=0.02, start=RandomInThreat(), progress=False, history=False)
    batch = optimize(model, x, NegLogProb(targets), **kw)
    for i in range(4):
        # the random start for row i is row i of the batch's random start: same generator stream
        start = Linf(0.1).random_start(x, torch.Generator().manual_seed(0))[i:i + 1]
        alone = optimize(model, x[i:i + 1], NegLogProb(targets[i:i + 1]), **{**kw, "start": start})
        assert torch.allclose(batch.x[i], alone.x[0], atol=1e-6)
        assert torch.allclose(batch.loss[i], alone.loss[0], atol=1e-5)


def test_parameters_frozen_and_restored_and_mode_kept():
    model = tiny_model().train()
    model[0].bias.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    seen = []

    def objective(out):
        seen.append([p.requires_grad for p in model.parameters()])
        return out.logits[:, 0]

    optimize(model, images(0, 2), objective, steps=2, step_size=0.01, progress=False)
    assert all(not any(s) for s in seen)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_frozen_restores_after_an_error():
    model = tiny_model()
    with pytest.raises(RuntimeError), frozen(model):
        raise RuntimeError("boom")
    assert all(p.requires_grad for p in model.parameters())


def test_best_iterate_is_kept():
    """With a step far too large the last iterate can be bad; the engine returns the best one it saw, and the
    reported loss is that iterate's loss."""
    model = tiny_model()
    x = images(1, 3)
    obj = NegLogProb(torch.tensor([4, 4, 4]))
    res = optimize(model, x, obj, threat=L2(2.0), steps=6, step_size=1.5, progress=False)
    start_loss = optimize(model, x, obj, steps=0, step_size=0.0, progress=False).loss
    assert bool((res.loss <= start_loss + 1e-6).all())
    with torch.no_grad():
        actual = obj(Outputs(x=res.x, logits=model(res.x)))
    assert torch.allclose(actual, res.loss, atol=1e-5)
    assert res.history[-1]["best_loss"] == pytest.approx(min(h["best_loss"] for h in res.history))
    assert res.history[-1]["best_loss"] <= min(h["loss"] for h in res.history) + 1e-6


def test_early_stop_drops_finished_examples():
    model = tiny_model()
    x = images(2, 6)
    y = model(x).argmax(1)
    kw = dict(threat=Linf(0.5), steps=30, step_size=0.05, progress=False, criterion=Untargeted(y))
    full = optimize(model, x, Untargeted(y).objective("ce"), **kw)
    early = optimize(model, x, Untargeted(y).objective("ce"), early_stop=True, **kw)
    assert bool(early.success.all()) and bool(full.success.all())
    assert early.example_steps < full.example_steps
    assert [h["active"] for h in early.history] == sorted((h["active"] for h in early.history), reverse=True)
    with torch.no_grad():
        assert bool((model(early.x).argmax(1) != y).all())


def test_restarts_never_hurt_and_seed_reproduces():
    model = tiny_model(3)
    x = images(3, 4)
    t = torch.tensor([1, 2, 3, 4])
    kw = dict(threat=Linf(0.03), steps=3, step_size=0.01, start=RandomInThreat(), progress=False)
    state = torch.random.get_rng_state()
    one = optimize(model, x, NegLogProb(t), restarts=1, seed=5, **kw)
    three = optimize(model, x, NegLogProb(t), restarts=3, seed=5, **kw)
    again = optimize(model, x, NegLogProb(t), restarts=3, seed=5, **kw)
    assert torch.equal(state, torch.random.get_rng_state())
    assert bool((three.loss <= one.loss + 1e-6).all())
    assert torch.equal(three.x, again.x)
    assert three.steps_run == 9
    assert {h["restart"] for h in three.history} == {0, 1, 2}


def test_layers_captured_in_one_pass_and_hooks_removed():
    model = tiny_model()
    calls = []
    model.register_forward_pre_hook(lambda m, i: calls.append(1))
    x = images(4, 2)
    with torch.no_grad():
        ref = model[1](model[0](images(5, 2)))
    obj = FeatureDistance("1", ref) + 0.1 * FeatureDistance("0", model[0](images(5, 2)).detach())
    res = optimize(model, x, obj, steps=3, rule=Adam(0.05), progress=False)
    assert len(calls) == 4  # 3 gradient steps + the final evaluation, each one forward pass
    assert all(len(model[i]._forward_hooks) == 0 for i in range(len(model)))
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_history_reports_objective_figures():
    model = tiny_model()
    res = optimize(model, images(6, 2), NegLogProb(torch.tensor([0, 1])), steps=4, step_size=0.05, progress=False,
                   criterion=Targeted(torch.tensor([0, 1])))
    assert len(res.history) == 5
    assert {"loss", "best_loss", "success", "active", "target_prob", "step", "restart"} <= set(res.history[0])
    assert res.history[-1]["target_prob"] >= res.history[0]["target_prob"]
    assert optimize(model, images(6, 2), NegLogProb(torch.tensor([0, 1])), steps=2, step_size=0.1,
                    history=False, progress=False).history == []


def test_unconstrained_step_stays_in_box():
    model = tiny_model()
    res = optimize(model, images(7, 2), lambda out: -out.logits.pow(2).sum(1), threat=Unconstrained(), steps=5,
                   step_size=0.5, progress=False)
    assert float(res.x.min()) >= 0 and float(res.x.max()) <= 1


def test_bad_arguments():
    model, x = tiny_model(), images(0, 1)
    obj = NegLogProb(torch.tensor([0]))
    with pytest.raises(ValueError, match="steps"):
        optimize(model, x, obj, steps=-1, step_size=0.1)
    with pytest.raises(ValueError, match="early_stop needs"):
        optimize(model, x, obj, steps=1, step_size=0.1, early_stop=True)
    with pytest.raises(ValueError, match="step rule or a step_size"):
        optimize(model, x, obj, steps=1)
    with pytest.raises(ValueError, match="not both"):
        optimize(model, x, obj, steps=1, step_size=0.1, rule=SteepestStep(0.1))
    with pytest.raises(TypeError, match="start"):
        optimize(model, x, obj, steps=1, step_size=0.1, start="middle")


def bn_model() -> nn.Module:
    g = torch.Generator().manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                      nn.Flatten(), nn.Linear(24, 5))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        m[1].running_mean.copy_(torch.randn(6, generator=g))
        m[1].running_var.copy_(torch.rand(6, generator=g) + 0.5)
    return m.eval()


@pytest.mark.parametrize("settings", ["plain", "fast"])
def test_speed_settings_keep_the_model_and_the_result(settings):
    from robustlens.optim import speed

    model = bn_model()
    weight_format = model[0].weight.is_contiguous()
    x = images(8, 3)
    t = torch.tensor([0, 1, 2])
    with speed.use(speed.PLAIN if settings == "plain" else speed.FAST):
        res = optimize(model, x, NegLogProb(t), threat=Linf(0.05), steps=0, step_size=0.01, progress=False)
        feats = optimize(model, x, FeatureDistance("1", torch.zeros(1, 6, 8, 8)), steps=1, step_size=0.01,
                         progress=False)  # a layer objective: hooks must see the real model
    assert model[0].weight.is_contiguous() == weight_format  # memory format restored
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        expected = NegLogProb(t)(Outputs(x=x, logits=model(x)))
    assert torch.allclose(res.loss, expected, atol=1e-5)
    assert torch.isfinite(feats.loss).all()


def test_explicit_channels_last_and_precision_arguments():
    model = bn_model()
    x = images(9, 2)
    kw = dict(threat=Linf(0.05), steps=2, step_size=0.01, progress=False)
    a = optimize(model, x, NegLogProb(torch.tensor([1, 2])), speed=Speed(channels_last=False, precision="fp32"), **kw)
    b = optimize(model, x, NegLogProb(torch.tensor([1, 2])), speed=Speed(channels_last=True, precision="fp32"), **kw)
    assert torch.allclose(a.loss, b.loss, atol=1e-4)
    with pytest.raises(ValueError, match="precision"):
        optimize(model, x, NegLogProb(torch.tensor([1, 2])), speed=Speed(precision="fp8"), **kw)


def test_early_stop_carrying_stopped_rows_gives_the_same_result(monkeypatch):
    """On a GPU stopped examples stay in the batch, frozen, until it has halved (new batch sizes cost cuDNN
    new plans); on the CPU they leave at once. Both give the same iterates, flags and counts."""
    import robustlens.optim.tracker as tracker
    from robustlens.optim.threat import Linf

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5)).double()
    x = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    targets = torch.arange(12) % 5

    def run():
        return optimize(model, x, Targeted(targets).objective("ce"), threat=Linf(0.02), steps=15,
                               step_size=0.003, early_stop=True, criterion=Targeted(targets),
                               progress=False)

    at_once = run()
    monkeypatch.setattr(tracker, "COMPACT_BELOW", {})  # the GPU rule, on the CPU
    carried = run()
    assert 0 < int(at_once.success.sum()) < 12  # some stop early, some run to the end
    assert torch.equal(at_once.success, carried.success)
    assert torch.allclose(at_once.x, carried.x, atol=1e-12) and torch.allclose(at_once.loss, carried.loss)
    assert at_once.example_steps == carried.example_steps
    assert [h["active"] for h in at_once.history] == [h["active"] for h in carried.history]
