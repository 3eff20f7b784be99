"""AutoAttack: DLR losses against their formula, APGD's step rule, FAB's projection, Square without gradients,
the gradient-masking flags, and the `evaluate --attack` CLI."""

from __future__ import annotations

import json

import pytest
import torch
from tests.conftest import shared_path
from torch import nn

from robustlens.cli.main import main
from robustlens.optim.threat import make_threat
from robustlens.robust.autoattack import APGDStep, apgd_ce, dlr_loss, dlr_loss_targeted, square
from robustlens.robust.autoattack.fab import project_hyperplane
from robustlens.robust.autoattack.flags import from_counts
from robustlens.robust.autoattack.runner import model_counts


def _mnist(n: int, kind: str = "advtrained"):
    from robustlens.models import create_model
    from robustlens.robust.datasets import load_mnist

    model = create_model("mnist_lenet5", str(shared_path("models", f"advertorch_mnist_lenet5_{kind}.pt"))).eval()
    imgs, labels = load_mnist(shared_path("data", "mnist"))
    return model, imgs[:n, None].float() / 255, labels[:n]


# --- losses -----------------------------------------------------------------------------------------------

def test_dlr_matches_its_formula_element_by_element():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(40, 7, generator=g) * 3
    y = torch.randint(0, 7, (40,), generator=g)
    t = (y + 1 + torch.randint(0, 6, (40,), generator=g)) % 7
    for i in range(40):
        row = sorted(z[i].tolist(), reverse=True)
        other = max(v for j, v in enumerate(z[i].tolist()) if j != int(y[i]))
        want = -(float(z[i, y[i]]) - other) / (row[0] - row[2] + 1e-12)
        want_t = -(float(z[i, y[i]]) - float(z[i, t[i]])) / (row[0] - 0.5 * (row[2] + row[3]) + 1e-12)
        assert float(dlr_loss(z, y)[i]) == pytest.approx(want, rel=1e-5, abs=1e-6)
        assert float(dlr_loss_targeted(z, y, t)[i]) == pytest.approx(want_t, rel=1e-5, abs=1e-6)
    # invariant to shifting and (positive) scaling of the logits, unlike cross-entropy
    assert torch.allclose(dlr_loss(5 * z + 3, y), dlr_loss(z, y), atol=1e-5)
    assert bool(((dlr_loss(z, y) > 0) == (z.argmax(1) != y)).all())  # positive exactly when misclassified


# --- APGD's step rule, driven by a tiny loop of the test's own (the engine's protocol) --------------------

def _drive(rule, model, x0, y, threat, steps, seed=0, loss="ce"):
    """Minimise log p(y) (= −CE) from a random start with ``rule``; returns (N,) bool: ever misclassified."""
    gen = torch.Generator().manual_seed(seed)
    z = threat.random_start(x0, gen)
    rule.start(z, steps)
    broken = torch.zeros(len(y), dtype=torch.bool)
    for t in range(steps + 1):
        z = z.detach().requires_grad_(True)
        logits = model(z)
        objective = torch.log_softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
        broken |= logits.argmax(1) != y
        if t == steps:
            break
        grad, = torch.autograd.grad(objective.sum(), z)
        z = threat.project(rule.step(z.detach(), grad, loss=objective.detach(), t=t, threat=threat, x0=x0), x0)
    return broken


def test_apgd_halves_the_step_and_returns_to_the_best_point_when_the_loss_stalls():
    threat = make_threat("linf", 0.1)
    rule = APGDStep()
    x0 = torch.full((3, 1, 4, 4), 0.5)
    rule.start(x0, 100)
    z = x0.clone()
    first_check = 22  # max(int(0.22 * 100), 1)
    for t in range(first_check + 1):  # a constant loss never rises: the step must halve at the checkpoint
        grad = torch.ones_like(z) * (1 if t % 2 else -1)
        z = rule.step(z, grad, loss=torch.zeros(3), t=t, threat=threat, x0=x0)
        if t < first_check:
            assert torch.allclose(rule.size, torch.full((3,), 0.2))
    assert torch.allclose(rule.size, torch.full((3,), 0.1))
    assert rule.next_check == 19  # the next interval shrinks by max(int(0.03 * 100), 1)
    assert bool(threat.contains(z, x0).all())


def test_apgd_keep_drops_state_rows():
    threat = make_threat("l2", 0.5)
    rule = APGDStep()
    x0 = torch.rand(4, 3, 5, 5)
    rule.start(x0, 10)
    z = rule.step(x0, torch.randn_like(x0), loss=torch.zeros(4), t=0, threat=threat, x0=x0)
    rule.keep(torch.tensor([True, False, True, False]))
    z = rule.step(z[[0, 2]], torch.randn(2, 3, 5, 5), loss=torch.zeros(2), t=1, threat=threat, x0=x0[[0, 2]])
    assert z.shape == (2, 3, 5, 5) and rule.best_z.shape == (2, 3, 5, 5) and rule.gains.shape[1] == 2


def test_apgd_t_target_groups_respect_the_batch_budget():
    from robustlens.robust.autoattack.apgd import TARGET_BATCH_VALUES, target_groups

    assert target_groups(9, 90, 28 * 28) == [range(0, 9)]                    # 810 MNIST digits in one run
    assert target_groups(9, 500, 28 * 28) == [range(0, 2), range(2, 4), range(4, 6), range(6, 8), range(8, 9)]
    assert target_groups(9, 20, 3 * 128 * 128) == [range(k, k + 1) for k in range(9)]   # one at a time
    for n in (1, 7, 90, 1000):
        for v in (784, 3 * 64 * 64):
            groups = target_groups(9, n, v)
            assert [k for g in groups for k in g] == list(range(9))
            assert all(len(g) == 1 or len(g) * v * n <= TARGET_BATCH_VALUES for g in groups)


@pytest.mark.parametrize("attack", ["apgd_t", "fab_t"])
@pytest.mark.parametrize("eps", [0.05, 0.15, 0.3])
def test_targets_in_one_batch_break_what_one_target_at_a_time_breaks(attack, eps, monkeypatch):
    """On a linear model every targeted run reaches its optimum (APGD) or is exact (FAB), so whether an example
    breaks does not depend on the start: stacking all targets in one batch must break the same examples."""
    from robustlens.robust import autoattack
    from robustlens.robust.autoattack import apgd as apgd_module

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 6)).eval()
    x = torch.rand(40, 1, 4, 4)
    y = model(x).argmax(1).detach()
    threat = make_threat("linf", eps)
    runs = {}
    for budget in (10**9, 1):                      # all targets together; one target per run
        monkeypatch.setattr(apgd_module, "TARGET_BATCH_VALUES", budget)
        adv = getattr(autoattack, attack)(model, x, y, eps=eps, steps=30, targets=5)
        assert threat.contains(adv, x, tol=1e-6).all()
        with torch.no_grad():
            runs[budget] = model(adv).argmax(1) != y
    assert torch.equal(runs[10**9], runs[1])
    assert 0 < int(runs[1].sum()) < len(y) or eps == 0.3


def test_apgd_beats_or_equals_pgd_at_equal_steps():
    from robustlens.optim.steps import SteepestStep, madry_step_size

    model, x, y = _mnist(60)
    threat = make_threat("linf", 0.3)
    apgd = _drive(APGDStep(), model, x, y, threat, steps=20)
    pgd = _drive(SteepestStep(madry_step_size(0.3, 20)), model, x, y, threat, steps=20)
    assert int(apgd.sum()) >= int(pgd.sum()) and int(pgd.sum()) < len(y)
    adv = apgd_ce(model, x, y, norm="linf", eps=0.3, steps=20, seed=0)  # the same rule on the engine
    with torch.no_grad():
        on_engine = model(adv).argmax(1) != y
    assert int(on_engine.sum()) >= int(pgd.sum()) and bool(threat.contains(adv, x, tol=1e-6).all())


# --- FAB's projection ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_projection_reaches_the_hyperplane_inside_the_box_with_the_smallest_step(norm):
    g = torch.Generator().manual_seed(1)
    t, w, c = torch.rand(16, 30, generator=g), torch.randn(16, 30, generator=g), torch.randn(16, generator=g)
    d = project_hyperplane(t, w, c, norm)
    ws = w * c.sign()[:, None]
    reachable = (ws.clamp_min(0) * (1 - t) + (-ws).clamp_min(0) * t).sum(1)  # the most w·d the box allows
    ok = reachable >= c.abs()
    assert int(ok.sum()) >= 8
    assert torch.allclose((w * d).sum(1)[ok], c[ok], atol=1e-4)
    assert bool(((t + d) >= -1e-6).all() and ((t + d) <= 1 + 1e-6).all())
    # no feasible point on the hyperplane is closer: feasible points near d on it are not shorter
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    tried = 0
    for _ in range(300):
        r = d + torch.randn(16, 30, generator=g) * 0.02
        r = r + ((c - (w * r).sum(1)) / (w * w).sum(1))[:, None] * w  # back onto the hyperplane w·r = c
        inside = ((t + r) >= 0).all(1) & ((t + r) <= 1).all(1) & ok
        other = r.abs().amax(1) if norm == "linf" else r.norm(dim=1)
        assert bool((other[inside] >= size[inside] - 1e-4).all())
        tried += int(inside.sum())
    assert tried > 100


# --- Square -------------------------------------------------------------------------------------------------

class NoGradients(nn.Module):
    """A model that blocks autograd completely: every forward pass runs under torch.no_grad."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        with torch.no_grad():
            return self.net(x).detach()


def test_square_needs_no_gradients_and_stays_in_the_ball():
    model, x, y = _mnist(20, "clntrained")
    blocked = NoGradients(model)
    adv = square(blocked, x, y, norm="linf", eps=0.3, queries=100, seed=0)
    assert bool(make_threat("linf", 0.3).contains(adv, x, tol=1e-6).all())
    with torch.no_grad():
        broken = int((model(adv).argmax(1) != y).sum())
    assert broken >= 10, broken  # the standard LeNet falls to 100 queries of random search at ε = 0.3
    with torch.no_grad():  # also inside a no-grad block
        assert torch.equal(square(blocked, x, y, norm="linf", eps=0.3, queries=100, seed=0), adv)


def test_on_attack_reports_each_attack_with_the_accuracy_after_it():
    from robustlens.robust.autoattack.runner import autoattack

    model, x, y = _mnist(12, "advtrained")
    seen: list[tuple[str, float]] = []
    plan = [("apgd-ce", {"steps": 5, "restarts": 1}), ("square", {"queries": 30, "p_init": 0.8})]
    res = autoattack(model, x, y, eps=0.3, attacks_plan=plan, checks_on=False,
                     on_attack=lambda name, acc: seen.append((name, acc)))
    assert seen == [(a, res.robust_after[a]) for a, _ in plan]


# --- flags --------------------------------------------------------------------------------------------------

class Quantised(nn.Module):
    """Input quantised to 8 levels before the network: gradients are zero almost everywhere."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 7) / 7)


class Softmaxed(nn.Module):
    """Returns saturated probabilities (softmax of 50× the logits) instead of logits."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.softmax(50 * self.net(x), 1)


def _flags(model, x, y):
    clean = model(x).argmax(1) == y
    c = model_counts(model, x, y, clean, norm="linf", large_eps=False, seed=0)
    c |= {"training": 0, "square_only": 0}
    return {f.code for f in from_counts(c, n=len(y), norm="linf", eps=[0.3])}


def test_masked_gradients_raise_flags_and_a_normal_model_raises_none():
    model, x, y = _mnist(40)
    assert _flags(model, x, y) == set()
    assert "vanishing_gradients" in _flags(Quantised(model), x, y)
    soft = _flags(Softmaxed(model), x, y)
    assert {"probability_outputs", "vanishing_gradients"} <= soft


def test_flags_from_counts_square_training_nondeterminism_and_monotonicity():
    base = {"correct": 100, "zero_grad": 0, "probabilities": 0, "nondeterministic": 0, "training": 0,
            "large_tried": 10, "large_robust": 0, "square_only": 0, "raw_robust": [90, 80]}
    assert from_counts(base, n=100, norm="linf", eps=[0.1, 0.2]) == []
    bad = base | {"nondeterministic": 1, "training": 1, "large_robust": 2, "square_only": 3, "raw_robust": [80, 85]}
    codes = {f.code for f in from_counts(bad, n=100, norm="linf", eps=[0.1, 0.2])}
    assert codes == {"nondeterministic", "training_mode", "large_eps_not_broken", "square_beats_white_box",
                     "not_monotone_in_eps"}


# --- CLI -----------------------------------------------------------------------------------------------------

def _cli(*extra):
    weights = shared_path("models", "advertorch_mnist_lenet5_clntrained.pt")
    data = shared_path("data", "mnist")
    return ["evaluate", "--model", "mnist_lenet5", "--weights", str(weights), "--data", f"mnist:{data}",
            "--limit", "20", "--batch-size", "20", "--json", "--no-progress", *extra]


def test_cli_square_json_is_strict_and_breakdown_is_reported(tmp_path, capsys):
    assert main(_cli("--attack", "square", "--eps", "0.3", "--queries", "50", "--out", str(tmp_path))) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert out["n"] == 20 and out["manifest"]["attacks"][0]["name"] == "square"
    assert out["manifest"]["attacks"][0]["queries"] == 50
    from robustlens._version import version
    assert out["manifest"]["versions"]["robustlens"] == version() != "unknown"   # installed in the test venv
    b = out["breakdown"][0]
    assert b["robust_correct"] == out["robust_correct"] and set(b["robust_accuracy_after"]) == {"square"}
    assert sum(b["broken_by"].values()) == 20 and len(out["per_example"]["0.3"]) == 20
    assert (tmp_path / "result.json").is_file() and (tmp_path / "robust_accuracy_after_each_attack.png").is_file()


def test_cli_rejects_bad_attack_settings_without_writing(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(_cli("--attack", "fab-t", "--norm", "l1", "--out", str(out))) == 2
    assert "supports" in capsys.readouterr().err and not out.exists()
    assert main(_cli("--attack", "square", "--queries", "0", "--out", str(out))) == 2
    assert not out.exists()


@pytest.mark.slow
def test_torchrun_two_processes_give_the_counts_of_one(capsys):
    import os
    import subprocess
    import sys

    cmd = _cli("--attack", "square", "--eps", "0.2,0.3", "--queries", "60", "--limit", "40", "--batch-size", "10")
    assert main(cmd) == 0
    single = json.loads(capsys.readouterr().out)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "robustlens", *cmd], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    double = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][0])
    assert double["processes"] == 2 and single["processes"] == 1
    for key in ("n", "clean_correct", "robust_correct", "breakdown", "per_example", "flags"):
        assert double[key] == single[key], key
    assert single["robust_correct"]["0.3"] <= single["robust_correct"]["0.2"] and single["robust_correct"]["0.3"] < 40


def test_summary_takes_the_worst_case_over_smaller_eps_and_flags_non_monotone_accuracy():
    from robustlens.robust.autoattack.evaluation import _summarise
    from robustlens.robust.distributed import Context

    # codes: 1 robust, 2 misclassified clean, 3 + j broken by attack j; columns are examples
    codes = torch.tensor([[1, 2, 3, 4, 1], [1, 2, 1, 1, 4]], dtype=torch.float64)
    counts = {"correct": 4, "zero_grad": 0, "probabilities": 0, "nondeterministic": 0, "large_tried": 0,
              "large_robust": 0}
    r = _summarise(codes, counts, eps=[0.1, 0.2], names=["apgd-ce", "square"], norm="linf", training=False,
                   seconds=0.0, ctx=Context(), dataset=[], manifest={})
    assert r.clean_correct == 4 and r.raw_robust == [2, 3]
    assert r.broken_by[0] == [None, "clean", "apgd-ce@0.1", "square@0.1", None]
    assert r.broken_by[1] == [None, "clean", "apgd-ce@0.1", "square@0.1", "square@0.2"]
    assert r.robust_after == [{"apgd-ce": 3, "square": 2}, {"apgd-ce": 2, "square": 1}]
    assert {f.code for f in r.flags} == {"not_monotone_in_eps", "square_beats_white_box"}
