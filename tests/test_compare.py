"""compare: one attack and the same inversions on two models, transfer verdicts, target label spaces, CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from PIL import Image

from robustlens.cli.main import main
from robustlens.errors import UserError
from robustlens.models import create_model
from robustlens.robust.compare import check_same_target, compare_models, plot_comparison, target_for


@pytest.fixture(scope="module")
def pair():
    return [create_model("imagenette_resnet", seed=1), create_model("imagenette_resnet", seed=2)]


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    p = tmp_path_factory.mktemp("img") / "stripes.png"
    img = Image.new("RGB", (80, 64))
    img.putdata([((x * 7) % 256, (y * 5) % 256, 128) for y in range(64) for x in range(80)])
    img.save(p)
    return p


def test_targets_in_each_label_space(pair):
    tench_subset = target_for(pair[0], "tench")
    assert tench_subset == 0 and target_for(pair[0], "n03888257") == 9 and target_for(pair[0], "3") == 3
    with pytest.raises(UserError, match="not one of the 10 classes"):
        target_for(pair[0], "goldfish")
    resnet = SimpleNamespace(name="resnet", num_classes=1000)  # what target_for reads of a 1000-class model
    assert check_same_target([pair[0], resnet], "tench") == [0, 0]
    assert check_same_target([pair[0], resnet], "church") == [4, 497]
    with pytest.raises(UserError, match="name the class"):
        check_same_target([pair[0], resnet], "3")


def test_compare_runs_both_models_and_plots(pair, photo, tmp_path):
    runs = compare_models(pair, Image.open(photo).convert("RGB"), target="church", eps=3.0, steps=4,
                          layers=["layer2", "layer4"], invert_steps=3)
    assert [r.target for r in runs] == [4, 4]
    for r, other in zip(runs, reversed(pair)):
        assert r.image.shape == (3, 64, 64) and r.attack.adversarial.shape == (1, 3, 64, 64)
        assert float(r.attack.l2[0]) <= 3.0 + 1e-4
        assert r.inversion.images.shape == (2, 3, 64, 64)
        assert set(r.transfer) == {other.name} and "is_target" in r.transfer[other.name]
    assert plot_comparison(runs, tmp_path / "c.png").is_file()


def test_cli_compare(photo, tmp_path, capsys):
    out = tmp_path / "out"
    bad = main(["compare", str(photo), "--models", "imagenette_resnet,imagenette_resnet", "--layer", "nope",
                "--out", str(out)])
    assert bad == 2 and "unknown layer" in capsys.readouterr().err and not out.exists()
    assert main(["compare", str(photo), "--models", "imagenette_resnet,imagenette_resnet", "--target", "tench",
                 "--eps", "2", "--steps", "2", "--invert-steps", "2", "--json", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["layers"] == ["layer3", "layer4"] and len(result["models"]) == 2
    assert (out / "compare.png").is_file() and (out / "result.json").is_file()
