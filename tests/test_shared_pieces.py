"""One definition per fact: the model cache, the batch preprocessing, the default inversion layers and the
version string, each written once and used by the report, the app and the CLI."""

from __future__ import annotations

import pytest
import torch

from robustlens.errors import UserError
from robustlens.models import create_model
from robustlens.models.cache import ModelCache
from robustlens.models.layers import default_inversion_layers, layer_names
from robustlens.models.preprocess import preprocess, to_batch


def test_model_cache_same_key_same_object_other_weights_other_object(tmp_path):
    from safetensors.torch import save_file

    cache = ModelCache()
    a = cache.get("imagenette_resnet", "none", seed=1)
    assert cache.get("imagenette_resnet", "none", seed=1) is a and len(cache) == 1
    b = cache.get("imagenette_resnet", "none", seed=2)
    assert b is not a and not torch.equal(a.net.conv1.weight, b.net.conv1.weight)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in b.net.state_dict().items()}, str(path))
    c = cache.get("imagenette_resnet", str(path))
    assert c is not a and c is not b and len(cache) == 3
    assert torch.equal(c.net.conv1.weight, b.net.conv1.weight)  # the file's weights, not a fresh init
    assert ("imagenette_resnet", str(path), None) in cache
    with pytest.raises(UserError):
        cache.get("no_such_model")
    assert len(cache) == 3


def test_model_cache_put_and_users_share_it(default_model):
    from robustlens.models import DEFAULT_MODEL

    cache = ModelCache()
    cache.put(default_model, DEFAULT_MODEL)
    assert cache.get(DEFAULT_MODEL) is default_model
    from robustlens.report.context import ReportContext, ReportSettings

    ctx = ReportContext(out=None, image=None, image_label="", model_name=DEFAULT_MODEL, weights=None,  # type: ignore[arg-type]
                        robust_name=None, robust_weights=None, settings=ReportSettings(),
                        device=torch.device("cpu"), log=print)
    assert isinstance(ctx.models, ModelCache)
    ctx.models.put(default_model, DEFAULT_MODEL)
    assert ctx.main_model() is default_model


def test_to_batch_is_preprocess_stacked_on_the_device():
    from robustlens.assets import corgi_image
    from robustlens.images import example_image

    model = create_model("imagenette_resnet", "none")
    imgs = [corgi_image(), example_image("coffee"), corgi_image().convert("RGBA")]
    x = to_batch(imgs, model.config, "cpu")
    assert x.shape == (3, 3, 64, 64) and x.is_contiguous() and x.dtype == torch.float32
    assert torch.equal(x[0], preprocess(imgs[0], model.config))
    assert torch.equal(x[1], preprocess(imgs[1], model.config))
    assert torch.equal(x[2], x[0])  # an opaque RGBA photo reads as the RGB one
    assert 0 <= float(x.min()) and float(x.max()) <= 1


def test_default_inversion_layers_one_rule_everywhere(default_model):
    from robustlens.cli.commands.compare import default_layers as compare_default

    resnet = create_model("resnet18", "none")
    assert default_inversion_layers(resnet) == ("layer1", "layer3", "layer4")
    # `robustlens compare`: the two deepest, when every model has them
    assert compare_default([resnet, create_model("imagenette_resnet", "none")]) == ["layer3", "layer4"]
    assert compare_default([resnet, default_model]) == []
    lenet = create_model("mnist_lenet5", "none")
    picks = default_inversion_layers(lenet, k=2)
    assert len(picks) == 2 and all(p in layer_names(lenet) for p in picks)
    assert layer_names(lenet).index(picks[0]) < layer_names(lenet).index(picks[1])
    with pytest.raises(UserError, match="cannot choose 50 layers"):
        default_inversion_layers(lenet, k=50)


def test_version_is_one_string(capsys):
    from robustlens._version import version
    from robustlens.cli.main import main

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"robustlens {version()}"


def test_corgi_ships_with_its_licence():
    from robustlens.assets import CORGI, corgi_image

    assert CORGI.is_file() and CORGI.with_name("LICENSE-corgi.txt").is_file()
    assert "MIT License" in CORGI.with_name("LICENSE-corgi.txt").read_text()
    assert corgi_image().mode == "RGB" and corgi_image().size == (910, 588)
