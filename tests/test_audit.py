"""`robustlens audit`: figures against evaluate's, intervals, calibration, bad input, and resuming after SIGTERM
and SIGKILL with identical figures (a clean-trained LeNet-5 at L∞ 0.3 on a few digits: seconds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import shared_path

from robustlens.cli.main import main
from robustlens.robust.audit.stats import calibration, wilson

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cmd(out: Path, *extra: str, limit: int = 24, batch: int = 8) -> list[str]:
    weights = shared_path("models", "advertorch_mnist_lenet5_clntrained.pt")
    data = shared_path("data", "mnist")
    return ["audit", "--model", f"mnist_lenet5={weights}", "--data", f"mnist:{data}", "--norm", "linf",
            "--eps", "0.3", "--limit", str(limit), "--batch-size", str(batch), "--pgd-steps", "10",
            *(["--explain-images", "4", "--sanity-stages", "2"] if "--no-explain" not in extra else []),
            "--no-progress", "--threads", "1", "--out", str(out), "--json", *extra]


def figures(result: dict) -> dict:
    """Every figure of every model: all but the cost (seconds; and the pass counts, which include one-time probes
    of the model that each new process makes) and the run's own counters."""
    out = {label: {k: v for k, v in m.items() if k != "cost"} for label, m in result["models"].items()}
    for m in out.values():
        if m.get("explain"):
            m["explain"] = {k: v for k, v in m["explain"].items() if k != "seconds"}
    return out


def test_wilson_and_ece_by_hand():
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and abs(hi - 0.16113) < 1e-4           # the textbook value for 0/20
    lo, hi = wilson(12, 20)
    assert abs(lo - 0.38658) < 1e-4 and abs(hi - 0.78119) < 1e-4
    c = calibration([0.95, 0.95, 0.55, 0.55], [True, False, True, True], bins=10)
    # bin 9: accuracy 0.5, confidence 0.95; bin 5: accuracy 1, confidence 0.55 -> (2*0.45 + 2*0.45) / 4
    assert abs(c["ece"] - 0.45) < 1e-12 and c["bins"][9]["count"] == 2


def test_audit_figures_match_evaluate_autoattack(tmp_path, capsys):
    import torch

    from robustlens.models import create_model
    from robustlens.robust.autoattack.evaluation import evaluate_autoattack
    from robustlens.robust.datasets import open_dataset

    torch.set_num_threads(1)
    assert main(_cmd(tmp_path / "a")) == 0
    result = json.loads(capsys.readouterr().out)
    assert (tmp_path / "a" / "audit.json").is_file()
    page = (tmp_path / "a" / "audit.html").read_text()
    assert page.count("data:image/png;base64,") >= 5 and 'id="leaderboard"' in page and "http" not in page.lower()
    (label, m), = result["models"].items()
    model = create_model("mnist_lenet5", str(shared_path("models", "advertorch_mnist_lenet5_clntrained.pt")))
    ds = open_dataset(f"mnist:{shared_path('data', 'mnist')}", model, limit=24)
    ev = evaluate_autoattack(model, ds, norm="linf", eps=[0.3], batch_size=8, seed=0).to_dict()
    assert m["per_example"] == ev["per_example"] and m["breakdown"] == ev["breakdown"]
    assert [f["code"] for f in m["flags"]] == [f["code"] for f in ev["flags"]]
    assert m["clean"]["correct"] == ev["clean_correct"] and m["n"] == 24
    lo, hi = m["clean"]["ci95"]
    assert lo < m["clean"]["accuracy"] <= hi and (lo, hi) == wilson(m["clean"]["correct"], 24)
    assert m["autoattack"][0]["robust"]["correct"] == ev["robust_correct"]
    assert m["pgd"]["robust"][0]["correct"] >= m["autoattack"][0]["robust"]["correct"]
    assert 0 <= m["calibration"]["clean"]["ece"] <= 1 and m["calibration"]["under_attack"][0]["n"] == 24
    assert m["explain"]["sanity"]["verdict"]["saliency"] in ("pass", "fail")
    assert m["cost"]["parts"]["apgd-ce"]["backward"] > 0
    assert result["run"]["units_computed"] == 3 * 7 + 1 and result["run"]["units_reused"] == 0


@pytest.mark.parametrize("argv, message", [
    (["--model", "mnist_lenet", "--eps", "0.3"], "unknown model"),
    (["--model", "mnist_lenet5", "--eps", "1.5"], "out of range"),
    (["--model", "mnist_lenet5", "--eps", "0"], "above 0"),
    (["--model", "mnist_lenet5", "--eps", "0.3", "--no-explain", "--explain-images", "3"], "does not apply"),
    (["--model", "mnist_lenet5=", "--eps", "0.3"], "NAME=WEIGHTS"),
    (["--model", "mnist_lenet5", "--eps", "0.3", "--resume"], "no audit journal"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    data = shared_path("data", "mnist")
    with _no_raise():  # argparse errors exit, UserErrors return 2
        code = main(["audit", *argv, "--data", f"mnist:{data}", "--limit", "4", "--out", str(out)])
        assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is SystemExit:
            assert exc[1].code == 2
            return True
        return False


def test_other_settings_refuse_the_journal(tmp_path, capsys):
    out = tmp_path / "a"
    assert main(_cmd(out, limit=8)) == 0
    before = sorted(p.name for p in (out / "journal").iterdir())
    capsys.readouterr()
    assert main(_cmd(out, "--seed", "1", limit=8)) == 2
    assert "other settings (seed)" in capsys.readouterr().err
    assert main(_cmd(out, "--pgd-start", "input", limit=8)) == 2
    assert "other settings (pgd_start)" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "journal").iterdir()) == before


def test_pgd_start_input_with_two_restarts_is_in_the_figures(tmp_path, capsys):
    assert main(_cmd(tmp_path / "a", "--no-explain", "--pgd-start", "input", "--pgd-restarts", "2", limit=8)) == 0
    pgd = next(iter(json.loads(capsys.readouterr().out)["models"].values()))["pgd"]
    assert pgd["start"] == "input" and pgd["restarts"] == 2 and not pgd["random_start"]


def _units(out: Path) -> int:
    folder = out / "journal"
    return sum(1 for p in folder.glob("m*.json")) if folder.is_dir() else 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_mid_run_resumes_to_the_same_figures(tmp_path, capsys, sig):
    """Kill the audit once some units are journalled, run the same command again: identical figures, and the
    resumed run computes exactly the units missing (the one in flight at the kill is the only work redone)."""
    argv = _cmd(tmp_path / "whole", "--no-explain", limit=64, batch=4)
    assert main(argv) == 0
    whole = json.loads(capsys.readouterr().out)
    total = whole["run"]["units_computed"]
    out = tmp_path / "killed"
    argv = _cmd(out, "--no-explain", limit=64, batch=4)
    proc = subprocess.Popen([sys.executable, "-m", "robustlens", *argv], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _units(out) < 12 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    done = _units(out)
    assert proc.returncode == -sig and 0 < done < total, (proc.returncode, done, total)
    assert not (out / "audit.json").exists()
    assert main(argv) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["run"]["units_reused"] == done and resumed["run"]["units_computed"] == total - done
    assert figures(resumed) == figures(whole)


@pytest.mark.slow
def test_torchrun_two_processes_give_the_figures_of_one(tmp_path, capsys):
    assert main(_cmd(tmp_path / "one", "--no-explain", limit=32, batch=8)) == 0
    single = json.loads(capsys.readouterr().out)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "robustlens", *_cmd(tmp_path / "two", "--no-explain", limit=32, batch=8)],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    double = json.loads(lines[0])
    assert double["run"]["processes"] == 2 and single["run"]["processes"] == 1
    assert figures(double) == figures(single)


def test_evaluate_refuses_options_its_attack_does_not_have(tmp_path, capsys):
    data = shared_path("data", "mnist")
    base = ["evaluate", "--model", "mnist_lenet5", "--data", f"mnist:{data}", "--limit", "2", "--out",
            str(tmp_path / "o")]
    for extra, message in ((["--steps", "40", "--step-size", "0.01"], "--step-size does not apply to --attack autoattack"),
                           (["--attack", "pgd", "--queries", "9"], "--queries does not apply to --attack pgd"),
                           (["--attack", "apgd-t", "--restarts", "2"], "--restarts does not apply"),
                           (["--attack", "square", "--steps", "3"], "--steps does not apply"),
                           (["--attack", "fab-t", "--queries", "3"], "--queries does not apply"),
                           (["--version", "rand", "--queries", "3"], "--queries does not apply"),
                           (["--attack", "apgd-ce", "--start", "input"], "--start does not apply"),
                           (["--attack", "pgd", "--version", "plus"], "--version applies to AutoAttack")):
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (extra, err)
        assert not (tmp_path / "o").exists()


def test_evaluate_applies_the_options_that_apply(tmp_path, capsys):
    data = shared_path("data", "mnist")
    assert main(["evaluate", "--model", "mnist_lenet5", "--data", f"mnist:{data}", "--limit", "4", "--attack",
                 "apgd-ce", "--steps", "3", "--restarts", "2", "--json", "--no-progress"]) == 0
    (apgd,) = json.loads(capsys.readouterr().out)["manifest"]["attacks"]
    assert apgd["steps"] == 3 and apgd["restarts"] == 2
    assert main(["evaluate", "--model", "mnist_lenet5", "--data", f"mnist:{data}", "--limit", "4", "--attack", "pgd",
                 "--start", "input", "--restarts", "2", "--json", "--no-progress"]) == 0
    attack = json.loads(capsys.readouterr().out)["attack"]
    assert attack["start"] == "input" and attack["restarts"] == 2


def test_pass_counter_counts_square_incremental_queries_apart():
    import torch

    from robustlens.models import create_model
    from robustlens.robust.audit.passes import PassCounter
    from robustlens.robust.autoattack.square import square

    torch.manual_seed(0)
    model = create_model("mnist_lenet5", "none", seed=0).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)  # every example "correct": all are attacked
    counter = PassCounter((1, 28, 28))
    with counter.counting():
        square(model, x, y, norm="linf", eps=1e-4, queries=20, seed=0)
    c = counter.take()
    assert c["incremental"] == 20 * 4  # ε 1e-4 breaks nothing: 20 queries of the 4 images, each counted once
    assert 0 < c["forward"] <= 3 * 4 and c["backward"] == 0  # the start, the clean check, the evaluator's reset
    assert counter.take() == {"forward": 0, "backward": 0, "incremental": 0}
    with torch.no_grad():  # outside counting(): nothing counted
        square(model, x, y, norm="linf", eps=1e-4, queries=2, seed=0)
    assert counter.take()["incremental"] == 0
