"""The training speed levers: the lean training adversary, the cheap L2 pull-back, bf16 autocast selection, and
compact snapshots that carry a long run to another machine."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tests.test_training import _digits

from robustlens.models import create_model
from robustlens.models.checkpoints import read_metadata
from robustlens.optim.threat import make_threat
from robustlens.robust.methods import training_adversary
from robustlens.robust.training import TrainConfig, train, training_dtype


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_training_adversary_stays_feasible_raises_the_loss_and_leaves_the_model(norm, eps):
    model = create_model("mnist_lenet5", "none", seed=0)
    model.train()
    x, y = _digits(32)
    x = x.float() / 255
    adv = training_adversary(model, x, y, norm=norm, eps=eps, step_size=eps / 2, steps=3, seed=5)
    threat = make_threat(norm, eps)
    assert bool(threat.contains(adv, x, tol=1e-5).all())
    assert model.training and all(p.grad is None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)
    again = training_adversary(model, x, y, norm=norm, eps=eps, step_size=eps / 2, steps=3, seed=5)
    other = training_adversary(model, x, y, norm=norm, eps=eps, step_size=eps / 2, steps=3, seed=6)
    assert torch.equal(adv, again) and not torch.equal(adv, other)


def test_l2_pull_back_is_feasible_and_exact_inside():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(16, 3, 8, 8, generator=g)
    x = x0 + 0.8 * torch.randn(16, 3, 8, 8, generator=g)
    threat = make_threat("l2", 1.0)
    pulled = threat.pull_back(x, x0)
    assert bool(threat.contains(pulled, x0, tol=1e-6).all())
    inside = (x0 + 0.01 * torch.randn(16, 3, 8, 8, generator=g)).clamp(0, 1)
    assert torch.allclose(threat.pull_back(inside, x0), inside)
    # never closer than the exact projection (the nearest feasible point)
    exact = threat.project(x, x0)
    assert bool(((pulled - x).flatten(1).norm(dim=1) >= (exact - x).flatten(1).norm(dim=1) - 1e-5).all())


def test_training_dtype_follows_the_precision_and_the_device(monkeypatch):
    from robustlens.robust import training

    assert training_dtype("fp32", "cpu") is None
    assert training_dtype("bf16", "cpu") is torch.bfloat16
    monkeypatch.setattr(training, "native_bf16", lambda device: False)
    assert training.training_dtype("auto", "cpu") is None
    monkeypatch.setattr(training, "native_bf16", lambda device: True)
    assert training.training_dtype("auto", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")


CFG = TrainConfig(method="fast", norm="linf", eps=0.1, epochs=2, batch_size=16, lr=0.05, seed=3, precision="fp32")


def _model():
    return create_model("mnist_lenet5", "none", seed=CFG.seed)


def test_compact_snapshot_moves_a_run_to_a_new_folder(tmp_path):
    x, y = _digits()
    ref = _model()
    train(ref, x, y, CFG, out=tmp_path / "ref", log_every=4)
    snap = tmp_path / "committed" / "run.safetensors"
    train(_model(), x, y, CFG, out=tmp_path / "machine1", log_every=4, checkpoint_every=2, max_steps=7,
          snapshot=snap)
    full, compact = tmp_path / "machine1" / "checkpoint.safetensors", snap
    assert read_metadata(compact)["step"] == 6 and read_metadata(compact)["compact"]
    assert compact.stat().st_size < 0.6 * full.stat().st_size
    from safetensors.torch import load_file

    t = load_file(str(compact))
    assert t["model.conv1.weight"].dtype == torch.float16
    assert any(k.startswith("optim.") and v.dtype == torch.bfloat16 for k, v in t.items())
    log = snap.with_name("run.metrics.jsonl")
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [4, 6]
    # a new machine: nothing but the committed snapshot
    moved = _model()
    res = train(moved, x, y, CFG, out=tmp_path / "machine2", log_every=4, resume=True, snapshot=snap)
    assert res.resumed_from == 6 and res.steps == 12
    steps = [json.loads(line)["step"] for line in (tmp_path / "machine2" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    # float16 rounding of the weights: close to, not equal to, the uninterrupted run
    for (k, a), b in zip(ref.net.state_dict().items(), moved.net.state_dict().values()):
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=0.05, atol=5e-3), k
    assert res.final["seconds_total"] >= res.final["seconds"]


def test_weight_average_follows_its_formula_and_swaps_in_and_out():
    from robustlens.robust.averaging import WeightAverage

    net = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    avg = WeightAverage(net, decay=0.9)
    expected = torch.ones(1, 2)
    for t, value in enumerate([3.0, -1.0, 5.0, 2.0] + [0.5] * 20):
        with torch.no_grad():
            net[0].weight.fill_(value)
        avg.update(net, t)
        d = min(0.9, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * value
    assert torch.allclose(avg.tensors["0.weight"], expected)
    assert avg.decay_at(0) == pytest.approx(0.1) and avg.decay_at(10**6) == 0.9
    assert "1.num_batches_tracked" not in avg.tensors and "1.running_mean" in avg.tensors  # BN statistics too
    own = {k: v.clone() for k, v in net.state_dict().items()}
    with avg.swapped_in(net):
        assert torch.allclose(net[0].weight, expected)
    for k, v in net.state_dict().items():
        assert torch.equal(v, own[k]), k
    with pytest.raises(Exception, match="decay"):
        WeightAverage(net, decay=1.0)


def test_ema_training_saves_the_average_resumes_it_and_snapshots_it(tmp_path):
    from safetensors.torch import load_file

    x, y = _digits()
    cfg = TrainConfig(**{**CFG.to_dict(), "ema": 0.8})
    ref = _model()
    r_ref = train(ref, x, y, cfg, out=tmp_path / "ref", log_every=4)
    final = load_file(str(r_ref.model_path))
    assert read_metadata(r_ref.model_path)["weights_are"].startswith("exponential moving average")
    # the saved weights are the average, and the trained network holds them too; the average does not change
    # the trajectory, so the same run without it ends at the last step's weights, which differ
    for k, v in ref.net.state_dict().items():
        assert torch.equal(v.contiguous(), final[k]), k
    plain = _model()
    train(plain, x, y, CFG, out=tmp_path / "no-ema", log_every=4)
    assert not torch.allclose(final["conv1.weight"], plain.net.state_dict()["conv1.weight"])
    # killed after step 7 (checkpoint at step 6, average included) and resumed: the same average, bit for bit
    snap = tmp_path / "snap.safetensors"
    train(_model(), x, y, cfg, out=tmp_path / "cut", log_every=4, checkpoint_every=2, max_steps=7, snapshot=snap)
    assert load_file(str(snap))["ema.conv1.weight"].dtype == torch.float16  # compact: the average in float16
    r_cut = train(_model(), x, y, cfg, out=tmp_path / "cut", log_every=4, checkpoint_every=2, resume=True)
    assert r_cut.resumed_from == 6
    for k, v in load_file(str(r_cut.model_path)).items():
        assert torch.equal(v, final[k]), k
    # a checkpoint written without the average cannot resume a run that keeps one
    train(_model(), x, y, CFG, out=tmp_path / "plain", log_every=4, checkpoint_every=2, max_steps=3)
    with pytest.raises(Exception, match="no weight average"):
        train(_model(), x, y, cfg, out=tmp_path / "plain", log_every=4, resume=True)
