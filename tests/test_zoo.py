import pytest
import torch

from robustlens.errors import UserError
from robustlens.models import create_model, list_models
from robustlens.models.classify import classify, output2prob
from robustlens.models.layers import capture, get_activations, last_linear, layer_table, resolve_layer


def test_softmax_stable_for_huge_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4], [-1e4, -1e4, -1e4]])
    p = output2prob(logits)
    assert torch.isfinite(p).all()
    assert torch.allclose(p.sum(-1), torch.ones(3))
    assert torch.allclose(p[0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(p[1], torch.tensor([0.5, 0.5, 0.0]))
    assert torch.allclose(p[2], torch.full((3,), 1 / 3))
    naive = torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)
    assert not torch.isfinite(naive).all()  # the naive formula really does overflow here
    small = torch.randn(4, 10)
    assert torch.allclose(output2prob(small), torch.softmax(small, -1), atol=1e-7)


def test_random_init_is_deterministic_with_seed():
    a = create_model("resnet18", "none", seed=3)
    b = create_model("resnet18", "none", seed=3)
    c = create_model("resnet18", "none", seed=4)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.allclose(a(x), c(x))
    state = torch.get_rng_state()
    create_model("resnet18", "none", seed=5)
    assert torch.equal(state, torch.get_rng_state())  # building a model does not touch the global RNG


def test_offline_weights_error_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setenv("ROBUSTLENS_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        create_model("resnet50", "imagenet")
    msg = str(e.value)
    assert "\n" not in msg
    assert "resnet50-" in msg and ".pth" in msg and str(tmp_path / "th" / "hub" / "checkpoints") in msg


def test_weights_from_hub_cache_file(tmp_path, monkeypatch):
    import torchvision.models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    w = tvm.get_model_weights("resnet18").DEFAULT
    net = create_model("resnet18", "none", seed=7).net
    target = tmp_path / "th" / "hub" / "checkpoints" / w.url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    torch.save(net.state_dict(), target)
    m = create_model("resnet18", "imagenet")
    assert torch.equal(m.net.fc.weight, net.fc.weight)
    assert m.config.resize_size == w.transforms().resize_size[0]


def test_weights_path_state_dict(tmp_path):
    src = create_model("resnet18", "none", seed=1)
    torch.save(src.net.state_dict(), tmp_path / "w.pt")
    m = create_model("resnet18", str(tmp_path / "w.pt"))
    assert torch.equal(m.net.conv1.weight, src.net.conv1.weight)


def test_wrong_architecture_names_keys(tmp_path):
    torch.save(create_model("resnet18", "none").net.state_dict(), tmp_path / "r18.pt")
    with pytest.raises(UserError, match="missing keys: .*layer1.0.conv3"):
        create_model("resnet50", str(tmp_path / "r18.pt"))


def test_unknown_model_suggests():
    with pytest.raises(UserError, match="unknown model 'resnet5'.*resnet50"):
        create_model("resnet5")


def test_list_models_has_default_and_torchvision():
    names = {r["name"] for r in list_models()}
    assert {"efficientnet_lite0", "resnet50", "resnet18"} <= names


def test_resnet50_last_layer_in_features():
    m = create_model("resnet50", "none")
    name, fc = last_linear(m)
    assert (name, fc.in_features) == ("fc", 2048)
    rows = {r["name"]: r for r in layer_table(m)}
    assert rows["layer4"]["output_shape"] == [1, 2048, 7, 7]
    assert rows["avgpool"]["output_shape"] == [1, 2048, 1, 1]


def test_default_model_layers_and_head(default_model):
    assert last_linear(default_model)[1].in_features == 1280
    assert default_model.config.input_size == 224 and default_model.config.resize_size == 256
    assert default_model.config.interpolation == "bicubic"


def test_activations_hooks_removed():
    m = create_model("resnet18", "none")
    x = torch.rand(2, 3, 64, 64)
    acts = get_activations(m, x, ["layer1", "layer3.1.conv2"])
    assert acts["layer1"].shape == (2, 64, 16, 16) and acts["layer3.1.conv2"].shape == (2, 256, 4, 4)
    assert all(not mod._forward_hooks for mod in m.modules())
    with pytest.raises(UserError):
        with capture(m, ["layer1", "nope"]):
            pass
    assert all(not mod._forward_hooks for mod in m.modules())


def test_unknown_layer_lists_close_names():
    m = create_model("resnet18", "none")
    with pytest.raises(UserError, match="unknown layer 'layer5'.*layer1"):
        resolve_layer(m, "layer5")


def test_corgi_is_pembroke(default_model, corgi_path):
    from robustlens.images import load_pil
    from robustlens.models.preprocess import preprocess

    x = preprocess(load_pil(corgi_path), default_model.config).unsqueeze(0)
    top = classify(default_model, x)[0]
    assert top[0].index == 263 and top[0].name == "Pembroke" and top[0].prob > 0.8
