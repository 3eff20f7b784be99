"""Training: the methods run, a killed run resumes to the same result as an uninterrupted one (in-process and
through the CLI with SIGKILL), checkpoints hold the optimiser state, DDP under torchrun."""

from __future__ import annotations

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlens.errors import UserError
from robustlens.models import create_model
from robustlens.models.checkpoints import read_metadata
from robustlens.robust.training import TrainConfig, augment, learning_rate, train


def _digits(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 28×28 'digits': class k is a bright bar at row 2k+4 plus noise (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    x = torch.randint(0, 60, (n, 1, 28, 28), generator=g)
    for i, k in enumerate(labels.tolist()):
        x[i, 0, 2 * k + 4: 2 * k + 6, 4:24] = 255
    return x.to(torch.uint8), labels


def _write_mnist(folder: Path, n: int = 96) -> Path:
    x, y = _digits(n)
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr, code in [("t10k-images-idx3-ubyte.gz", x[:, 0].numpy(), 0x08),
                            ("t10k-labels-idx1-ubyte.gz", y.numpy().astype(np.uint8), 0x08)]:
        header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
        with gzip.open(folder / name, "wb") as f:
            f.write(header + arr.astype(np.uint8).tobytes())
    return folder


CFG = TrainConfig(method="fast", norm="linf", eps=0.1, epochs=2, batch_size=16, lr=0.05, seed=3)


def _run(out: Path, cfg: TrainConfig = CFG, **kw):
    model = create_model("mnist_lenet5", "none", seed=cfg.seed)
    x, y = _digits()
    res = train(model, x, y, cfg, out=out, val=_digits(40, seed=1), log_every=4, **kw)
    return model, res


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    ref_model, ref = _run(tmp_path / "ref")
    _, partial = _run(tmp_path / "cut", checkpoint_every=2, max_steps=7)  # "killed" after step 7
    assert partial.steps == 7 and not (tmp_path / "cut" / "model.safetensors").exists()
    assert read_metadata(tmp_path / "cut" / "checkpoint.safetensors")["step"] == 6
    model, res = _run(tmp_path / "cut", checkpoint_every=2, resume=True)
    assert res.resumed_from == 6 and res.steps == ref.steps == 12
    for (k, a), b in zip(ref_model.net.state_dict().items(), model.net.state_dict().values()):
        assert torch.equal(a, b), k
    assert res.final == {**ref.final, "seconds": res.final["seconds"], "seconds_total": res.final["seconds_total"]}
    log = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    ref_log = [json.loads(line) for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [r["step"] for r in ref_log]  # steps logged after the checkpoint: dropped
    assert [r["train_loss"] for r in log] == pytest.approx([r["train_loss"] for r in ref_log])


def test_checkpoint_holds_optimizer_state_and_refuses_other_settings(tmp_path):
    _run(tmp_path, max_steps=6, checkpoint_every=3)
    meta = read_metadata(tmp_path / "checkpoint.safetensors")
    assert meta["format"].startswith("robustlens-train-checkpoint") and meta["scheduler"]["step"] == 6
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "checkpoint.safetensors"))
    assert any(k.startswith("optim.") and k.endswith("momentum_buffer") for k in tensors) and "rng.torch" in tensors
    other = TrainConfig(**{**CFG.to_dict(), "lr": 0.2})
    with pytest.raises(UserError, match="other settings.*lr"):
        _run(tmp_path, other, resume=True)


@pytest.mark.parametrize("method", ["standard", "pgd", "trades"])
def test_methods_run_and_learn(tmp_path, method):
    cfg = TrainConfig(method=method, norm="l2", eps=0.0 if method == "standard" else 1.0, steps=2, epochs=3,
                      batch_size=16, lr=0.05, crop_padding=2, flip=True)
    model, res = _run(tmp_path, cfg)
    assert res.final["val_accuracy"] > 0.3  # chance is 0.1
    assert res.model_path is not None and create_model("mnist_lenet5", str(res.model_path)) is not None


def test_schedule_and_augmentation():
    cfg = TrainConfig(lr=1.0, warmup=0.25)
    assert learning_rate(cfg, 0, 100) == 0 and learning_rate(cfg, 25, 100) == 1.0 and learning_rate(cfg, 100, 100) == 0
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    same = augment(x, TrainConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(same, x)
    crop = augment(x, TrainConfig(crop_padding=1, flip=True), torch.Generator().manual_seed(0))
    assert crop.shape == x.shape


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "robustlens", "train", "--model", "mnist_lenet5", "--method", "fast", "--eps",
            "0.1", "--epochs", "3", "--batch-size", "16", "--lr", "0.05", "--seed", "3", "--checkpoint-every", "1",
            "--log-every", "4", "--no-progress", "--json", *args]


@pytest.mark.slow
def test_cli_resumes_after_sigkill(tmp_path):
    data = _write_mnist(tmp_path / "mnist")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cli("--data", f"mnist:{data}", "--out", str(out)), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = out / "checkpoint.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file() and json.loads(ckpt.read_text() or "{}").get("step", 0) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(ckpt.read_text())["step"]
    if killed_at >= 18:
        pytest.skip("the run finished before it could be killed")
    done = subprocess.run(_cli("--data", f"mnist:{data}", "--out", str(out), "--resume"), env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = json.loads(done.stdout)
    assert resumed["resumed_from_step"] >= 3 and resumed["steps"] == 18

    cfg = TrainConfig(method="fast", norm="linf", eps=0.1, epochs=3, batch_size=16, lr=0.05, seed=3)
    model = create_model("mnist_lenet5", "none", seed=3)
    x, y = _digits()
    ref = train(model, x, y, cfg, out=tmp_path / "ref", log_every=4)
    assert resumed["final_metrics"]["train_loss"] == pytest.approx(ref.final["train_loss"], rel=1e-5)
    again = create_model("mnist_lenet5", resumed["model_path"])
    for (k, a), b in zip(model.net.state_dict().items(), again.net.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


@pytest.mark.slow
def test_ddp_under_torchrun(tmp_path):
    data = _write_mnist(tmp_path / "mnist")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "robustlens", "train", "--model", "mnist_lenet5", "--data", f"mnist:{data}", "--method", "fast",
           "--eps", "0.1", "--epochs", "1", "--batch-size", "16", "--no-progress", "--json", "--out", str(tmp_path / "o")]
    # PYTHONFAULTHANDLER: a rank killed by a signal (SIGABRT, SIGSEGV) prints every thread's Python stack first
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1", "TORCH_SHOW_CPP_STACKTRACES": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    # on failure, the ranks' own error lines (torchrun's summary at the end names only the signal)
    errors = [line for line in proc.stderr.splitlines() if any(k in line for k in (
        "terminate", "what()", "Error", "error", "Abort", "abort", "Signal", "gloo", "Exception", "Thread 0x",
        "File "))]
    assert proc.returncode == 0, "\n".join(errors[-40:]) + "\n---\n" + proc.stderr[-2000:]
    # DDP is built after the parameters turn channels-last, so its gradient buckets have the grads' layout
    assert "Grad strides do not match bucket view strides" not in proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # only rank 0 prints
    result = json.loads(lines[0])
    assert result["processes"] == 2 and result["steps"] == 6 and np.isfinite(result["final_metrics"]["train_loss"])
