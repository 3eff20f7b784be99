"""The app's Explain and Synthesize tabs: their handlers called directly on the 64 px Imagenette pair, checked
against the APIs they wrap, and bad input refused with one line."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from PIL import Image, ImageDraw

from robustlens.errors import UserError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gradio") is None,
                                reason="needs Gradio (pip install 'robustlens[app]')")

PAIR = {"standard": ("imagenette_resnet_standard", None), "robust": ("imagenette_resnet_robust", None)}


@pytest.fixture(scope="module")
def bank():
    from robustlens.app.server import ModelBank

    return ModelBank(**PAIR)


@pytest.fixture(scope="module")
def photo():
    from robustlens.images import example_image

    return example_image("chelsea")


def test_explain_handler_matches_the_api(bank, photo):
    from robustlens.app.tabs import TOP1, run_explain
    from robustlens.explain import Saliency, edge_alignment
    from robustlens.models.preprocess import to_batch

    fig, summary = run_explain(bank, photo, "robust", "saliency", "0 tench")
    assert isinstance(fig, Image.Image) and fig.size[0] > 200
    model = bank.get("robust")
    x = to_batch([photo], model.config)
    cos = float(edge_alignment(model, x, 0)["cosine"][0])
    assert "tench" in summary and f"{cos:.3f}" in summary
    assert Saliency(model).attribute(x, 0).maps.abs().sum() > 0
    fig2, summary2 = run_explain(bank, photo, "standard", "gradcam", TOP1)
    top1 = int(bank.get("standard")(to_batch([photo], bank.get("standard").config)).argmax(1))
    assert f"({top1})" in summary2 and fig2.size == fig.size
    for bad in [dict(method="nope"), dict(target="99 nothing"), dict(image=None), dict(seed=-1)]:
        args = dict(image=photo, kind="robust", method="saliency", target=TOP1, seed=0) | bad
        with pytest.raises(UserError):
            run_explain(bank, args["image"], args["kind"], args["method"], args["target"], args["seed"])


def test_synthesis_handler_matches_the_recipes(bank, photo):
    from robustlens.app.tabs import TOP1, run_synthesis
    from robustlens.images import pil_to_tensor
    from robustlens.models.preprocess import to_batch
    from robustlens.recipes.synthesis import translate

    start, std, rob, summary = run_synthesis(bank, photo, "translate", "3 chain saw", None, 2)
    robust = bank.get("robust")
    x = to_batch([photo], robust.config)
    ref = translate(robust, x, [3], steps=2, seed=0, progress=False)
    assert torch.equal(pil_to_tensor(rob), ref.images[0]) and torch.equal(pil_to_tensor(start), x[0].mul(255)
                                                                           .round().div(255))
    assert std.size == rob.size == (64, 64) and "chain saw" in summary and "standard" in summary
    for task in ("inpaint", "superres", "sketch"):
        out = run_synthesis(bank, photo, task, "0 tench" if task == "sketch" else TOP1, None, 1)
        assert all(im.size == (64, 64) for im in out[:3]) and task in out[3]
    with pytest.raises(UserError, match="pick a class"):
        run_synthesis(bank, photo, "translate", TOP1, None, 1)
    with pytest.raises(UserError, match="task"):
        run_synthesis(bank, photo, "generate", "0 tench", None, 1)
    with pytest.raises(UserError, match="whole number"):
        run_synthesis(bank, photo, "inpaint", TOP1, None, 10 ** 6)


def test_inpaint_hole_from_drawn_strokes(bank, photo):
    """The strokes drawn in the editor are the hole: pixels outside them are the input's."""
    from robustlens.app.tabs import TOP1, run_synthesis
    from robustlens.images import pil_to_tensor
    from robustlens.models.preprocess import to_batch

    bg = photo.resize((128, 128))
    layer = Image.new("RGBA", bg.size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle([0, 0, 63, 63], fill=(255, 0, 0, 255))  # the top-left quarter
    editor = {"background": bg.convert("RGBA"), "layers": [layer], "composite": bg}
    start, std, rob, summary = run_synthesis(bank, None, "inpaint", TOP1, editor, 2)
    assert "your strokes" in summary
    x = to_batch([bg], bank.get("robust").config)[0]
    r = pil_to_tensor(rob)
    assert torch.equal(r[:, 40:, 40:], (x[:, 40:, 40:] * 255).round() / 255)       # outside: unchanged
    assert not torch.equal(pil_to_tensor(start)[:, :28, :28], (x[:, :28, :28] * 255).round() / 255)  # hole filled
    sketch = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    ImageDraw.Draw(sketch).ellipse([20, 20, 80, 80], outline=(0, 0, 0, 255), width=4)
    out = run_synthesis(bank, None, "sketch", "5 fire engine", {"background": None, "layers": [sketch],
                                                               "composite": sketch}, 1)
    assert "your drawing" in out[3] and float(pil_to_tensor(out[0]).mean()) > 0.8  # dark lines on white


def test_synthesis_needs_a_matching_pair():
    from robustlens.app.server import ModelBank
    from robustlens.app.tabs import run_synthesis

    bank = ModelBank(standard=("imagenette_resnet", "none"), robust=("mnist_lenet5", "none"))
    with pytest.raises(UserError, match="differ in input size or classes"):
        run_synthesis(bank, Image.new("RGB", (32, 32)), "superres", "", None, 1)


def test_page_has_the_new_tabs(bank):
    from robustlens.app.server import build_app

    app = build_app(bank)
    ids = {getattr(b, "elem_id", None) for b in app.blocks.values()}
    assert {"tab-explain", "tab-synthesize", "explain-method", "syn-editor", "run-synthesize"} <= ids
    names = {d.get("api_name") for d in app.config["dependencies"]}
    assert {"explain_fn", "synth_fn"} <= names
