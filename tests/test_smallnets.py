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
                                        ("cifar_preactresnet18", (3, 32, 32)), ("imagenette_resnet", (3, 64, 64))])
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
