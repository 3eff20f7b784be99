"""Weights files: MadryLab robustness layout, RobustBench/DataParallel prefixes, the project's safetensors,
refusing pickled code, naming mismatched keys."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import torch
import torchvision

from robustlens.errors import UserError
from robustlens.models import create_model
from robustlens.models.checkpoints import is_madry, load_weights, read_metadata, save_weights
from robustlens.models.preprocess import IMAGENET_MEAN, IMAGENET_STD


def _madry_checkpoint(net: torch.nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict:
    """A checkpoint in the key layout of MadryLab robustness (DataParallel-wrapped AttackerModel)."""
    sd = net.state_dict()
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    model = {**{f"module.model.{k}": v for k, v in sd.items()},
             **{f"module.attacker.model.{k}": v.clone() for k, v in sd.items()},
             "module.normalizer.new_mean": m, "module.normalizer.new_std": s,
             "module.attacker.normalize.new_mean": m.clone(), "module.attacker.normalize.new_std": s.clone()}
    return {"model": model, "epoch": 90, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}}


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(1)
    net = torchvision.models.resnet18(num_classes=1000).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a wrong buffer mapping would show
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


def test_madry_checkpoint_gives_the_same_logits(tmp_path, resnet18):
    path = tmp_path / "imagenet_l2_3_0.pt"
    torch.save(_madry_checkpoint(resnet18), path)
    assert is_madry(torch.load(path, weights_only=True)["model"])
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = resnet18((x - mean) / std)
    for spec in (str(path), f"madry:{path}"):  # auto-detected, and named explicitly
        model = create_model("resnet18", spec)
        with torch.no_grad():
            assert torch.allclose(model(x), expected, atol=1e-5)
        assert model.config.mean == pytest.approx(IMAGENET_MEAN) and model.config.std == pytest.approx(IMAGENET_STD)


def test_madry_normaliser_statistics_are_used(tmp_path, resnet18):
    path = tmp_path / "cifar_style.pt"
    torch.save(_madry_checkpoint(resnet18, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)), path)
    model = create_model("resnet18", str(path))
    assert model.config.mean == pytest.approx((0.5,) * 3) and model.config.std == pytest.approx((0.25,) * 3)


def test_madry_checkpoint_for_another_architecture_names_the_keys(tmp_path, resnet18):
    path = tmp_path / "r18.pt"
    torch.save(_madry_checkpoint(resnet18), path)
    with pytest.raises(UserError, match=r"missing keys: layer1\.2\..*") as e:
        create_model("resnet34", str(path))
    assert "ResNet" in str(e.value)


def test_madry_prefix_on_a_plain_state_dict_is_refused(tmp_path, resnet18):
    path = tmp_path / "plain.pt"
    torch.save(resnet18.state_dict(), path)
    with pytest.raises(UserError, match="not a MadryLab"):
        create_model("resnet18", f"madry:{path}")


def test_robustbench_and_dataparallel_prefixes(tmp_path, resnet18):
    sd = resnet18.state_dict()
    wrapped = {**{f"module.model.{k}": v for k, v in sd.items() if not k.endswith("num_batches_tracked")},
               "module.normalize.mean": torch.tensor([0.4, 0.4, 0.4]), "module.normalize.std": torch.tensor([0.2] * 3)}
    path = tmp_path / "robustbench.pt"
    torch.save({"state_dict": wrapped}, path)
    net = torchvision.models.resnet18()
    info = load_weights(net, path)
    assert info.prefix == "module.model." and info.mean == pytest.approx((0.4,) * 3)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in sd.items())  # old checkpoints lack num_batches_tracked


def test_project_safetensors_round_trip_with_metadata(tmp_path):
    model = create_model("mnist_lenet5", "none", seed=3)
    path = save_weights(model.net.state_dict(), tmp_path / "lenet.safetensors", {"model": "mnist_lenet5", "eps": 0.3})
    assert read_metadata(path) == {"model": "mnist_lenet5", "eps": 0.3}
    assert (tmp_path / "lenet.json").is_file()
    again = create_model("mnist_lenet5", str(path))
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


class _Payload:
    """Unpickling this object would create a file (what a malicious checkpoint does)."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_payload_is_refused_and_never_runs(tmp_path, legacy):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pt"
    obj = {"model": {"conv1.weight": torch.zeros(1)}, "x": _Payload(str(marker))}
    if legacy:
        with evil.open("wb") as f:
            pickle.dump(obj, f)
    else:
        torch.save(obj, evil, _use_new_zipfile_serialization=True)
    assert not marker.exists()
    with pytest.raises(UserError, match="refusing to load|cannot read"):
        create_model("mnist_lenet5", str(evil))
    assert not marker.exists()
    if legacy:
        return
    proc = subprocess.run([sys.executable, "-m", "robustlens", "classify", "--model", "mnist_lenet5", "--weights",
                           str(evil), str(tmp_path / "missing.png")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("robustlens: error:") and len(proc.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_wrong_architecture_names_missing_and_unexpected_keys(tmp_path):
    smallcnn = create_model("mnist_smallcnn", "none").net
    path = tmp_path / "smallcnn.pt"
    torch.save(smallcnn.state_dict(), path)
    with pytest.raises(UserError) as e:
        create_model("mnist_lenet5", str(path))
    msg = str(e.value)
    assert "missing keys: conv1.weight" in msg and "unexpected keys: feature_extractor.conv1.weight" in msg
