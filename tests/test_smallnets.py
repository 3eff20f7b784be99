"""Small zoo models: shapes and configs, the shared MNIST checkpoints, the project's Imagenette models."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import shared_path

from robustlens.errors import UserError
from robustlens.models import create_model, list_models
from robustlens.models.layers import layer_names
from robustlens.models.small import IMAGENETTE_WNIDS


@pytest.mark.parametrize("name,shape", [("mnist_lenet5", (1, 28, 28)), ("mnist_smallcnn", (1, 28, 28)),
                                        ("cifar_preactresnet18", (3, 32, 32)), ("imagenette_resnet", (3, 64, 64)),
                                        ("imagenette128_resnet", (3, 128, 128))])
def test_shapes_configs_and_default_weights(name, shape):
    model = create_model(name)
    assert model.weights.startswith("none") and model.num_classes == 10
    assert (model.config.channels, model.config.input_size, model.config.input_size) == shape
    with torch.no_grad():
        assert model(torch.rand(2, *shape)).shape == (2, 10)
    assert {r["name"]: r["default_weights"] for r in list_models(False)}[name] == "none"


def test_mnist_config_and_classes():
    m = create_model("mnist_lenet5")
    assert m.config.mean == (0.0,) and m.config.std == (1.0,) and m.config.resize_size == 28
    assert [m.class_name(i) for i in range(10)] == [str(i) for i in range(10)]
    assert {"conv1", "conv2", "linear1", "linear2"} <= set(layer_names(m))


def test_imagenette_label_space_and_layers():
    m = create_model("imagenette_resnet")
    assert m.class_wnids == IMAGENETTE_WNIDS and m.class_name(0) == "tench"
    assert {"layer1", "layer2", "layer3", "layer4", "fc"} <= set(layer_names(m))
    assert m.describe()["class_wnids"][0] == "n01440764"


@pytest.mark.parametrize("file,model", [("advertorch_mnist_lenet5_clntrained.pt", "mnist_lenet5"),
                                        ("advertorch_mnist_lenet5_advtrained.pt", "mnist_lenet5"),
                                        ("trades_mnist_smallcnn.pt", "mnist_smallcnn")])
def test_shared_mnist_checkpoints_classify_digits(file, model):
    from robustlens.robust.datasets import load_mnist

    m = create_model(model, str(shared_path("models", file)))
    x, y = load_mnist(shared_path("data", "mnist"))
    with torch.no_grad():
        acc = (m(x[:200].float().div(255).unsqueeze(1)).argmax(1) == y[:200]).float().mean()
    assert acc >= 0.97


def test_project_models_need_their_weights_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLENS_MODELS", str(tmp_path))
    with pytest.raises(UserError, match="ROBUSTLENS_MODELS"):
        create_model("imagenette_resnet_robust")
    net = create_model("imagenette_resnet", seed=5).net
    from robustlens.models.checkpoints import save_weights

    save_weights(net.state_dict(), tmp_path / "imagenette_resnet_robust.safetensors", {"model": "imagenette_resnet"})
    m = create_model("imagenette_resnet_robust")
    assert m.class_wnids == IMAGENETTE_WNIDS
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), m.net.state_dict().values()))


@pytest.mark.parametrize("kind,method", [("standard", "standard"), ("robust", "fast")])
def test_shipped_128px_pair_says_how_it_was_trained(kind, method):
    from robustlens.models.checkpoints import read_metadata
    from robustlens.models.small import models_dir

    m = create_model(f"imagenette128_resnet_{kind}")
    meta = read_metadata(models_dir() / f"imagenette128_resnet_{kind}.safetensors")
    assert m.config.input_size == 128 and m.class_wnids == IMAGENETTE_WNIDS
    assert meta["model"] == "imagenette128_resnet" and meta["preprocess"]["input_size"] == 128
    assert meta["train_config"]["method"] == method and meta["train_config"]["norm"] == "l2"
    assert meta["train_config"]["eps"] == 1.5 and meta["weights_start"].endswith("robust-64/model.safetensors"
                                                                                  if kind == "robust" else
                                                                                  "standard-64/model.safetensors")


def _pair_accuracy(prefix: str) -> dict[str, tuple[float, float]]:
    """(clean, L2 PGD-10 ε 1.0) accuracy of ``{prefix}_standard`` and ``{prefix}_robust`` on 100 val images."""
    from robustlens.robust.datasets import open_dataset
    from robustlens.robust.evaluate import evaluate_robustness

    val = shared_path("data", "imagenette128", "val")
    acc = {}
    for kind in ("standard", "robust"):
        m = create_model(f"{prefix}_{kind}")
        ds = open_dataset(f"folder:{val}", m, limit=100)
        r = evaluate_robustness(m, ds, norm="l2", eps=[1.0], steps=10, batch_size=100)
        acc[kind] = (r.clean_accuracy, r.robust_accuracy[1.0])
    return acc


@pytest.mark.slow
def test_shipped_128px_pair_is_accurate_and_only_the_robust_one_is_robust():
    """On 100 val images (10 per class): both classify well, and L2 PGD-10 at ε 1.0 breaks the standard model
    but not the robust one (docs/models.md has the figures on all 3925)."""
    acc = _pair_accuracy("imagenette128_resnet")
    assert acc["standard"][0] >= 0.7 and acc["robust"][0] >= 0.7, acc  # measured 0.80 and 0.80
    assert acc["standard"][1] <= 0.25 and acc["robust"][1] >= 0.55, acc  # measured 0.12 and 0.68


@pytest.mark.parametrize("kind,method,eps", [("standard", "standard", 1.5), ("robust", "fast", 3.0)])
def test_default_pair_says_how_it_was_trained(kind, method, eps):
    """The default pair (since session 13): ResNet-18 layout at half width, the long run's last stages."""
    from robustlens.models import DEFAULT_ROBUST_MODEL
    from robustlens.models.checkpoints import read_metadata
    from robustlens.models.counterparts import standard_for
    from robustlens.models.small import models_dir

    name = DEFAULT_ROBUST_MODEL if kind == "robust" else standard_for(DEFAULT_ROBUST_MODEL)[0]
    assert name == f"imagenette128_resnet18_{kind}"
    m = create_model(name)
    meta = read_metadata(models_dir() / f"{name}.safetensors")
    assert m.config.input_size == 128 and m.class_wnids == IMAGENETTE_WNIDS
    assert sum(p.numel() for p in m.net.parameters()) == 2_797_610  # "2.8 M parameters" in docs/models.md
    assert meta["model"] == "imagenette128_resnet18_32" and meta["preprocess"]["input_size"] == 128
    cfg = meta["train_config"]
    assert cfg["method"] == method and cfg["norm"] == "l2" and cfg["eps"] == eps
    assert meta["weights_start"] == f"snapshots/pair/{kind}-s{'2e3' if kind == 'robust' else '1'}-final.safetensors"


@pytest.mark.slow
def test_default_pair_is_accurate_and_only_the_robust_one_is_robust():
    """On 100 val images (10 per class): both classify well, and L2 PGD-10 at ε 1.0 breaks the standard model
    but not the robust one (docs/models.md has the figures on all 3925)."""
    acc = _pair_accuracy("imagenette128_resnet18")
    assert acc["standard"][0] >= 0.8 and acc["robust"][0] >= 0.8, acc  # measured 0.89 and 0.89
    assert acc["standard"][1] <= 0.2 and acc["robust"][1] >= 0.6, acc  # measured 0.05 and 0.75
