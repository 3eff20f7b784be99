"""The interactive app without a browser: its helpers, its handlers against the API, and an offline page."""

from __future__ import annotations

import importlib.util
import socket
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from robustlens.cli.main import main
from robustlens.errors import UserError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gradio") is None,
                                reason="needs Gradio (pip install 'robustlens[app]')")


def test_choices_and_parsing(default_model):
    from robustlens.app.server import class_choices, parse_choice, parse_eps

    choices = class_choices(default_model)
    assert len(choices) == 1000 and choices[282] == "282 tiger cat" and choices[76] == "76 tarantula"
    assert parse_choice("282 tiger cat") == 282 and parse_choice(7) == 7
    assert parse_eps("4/255") == pytest.approx(4 / 255) and parse_eps("0.5") == 0.5
    for bad in ("x", "1/0", "2"):
        with pytest.raises(UserError):
            parse_eps(bad)
    with pytest.raises(UserError):
        parse_choice("tiger cat")


def test_attack_handler_matches_the_api(default_model):
    import torch

    from robustlens.app.server import ModelBank, run_attack
    from robustlens.images import example_image, pil_to_tensor
    from robustlens.models.preprocess import preprocess
    from robustlens.recipes.attacks import attack

    bank = ModelBank()
    bank.models.put(default_model, *bank.standard)
    img = example_image("chelsea")
    adv, pert, before, after, summary = run_attack(bank, img, "standard", "76 tarantula", "linf", "4/255", 3)
    x = torch.stack([preprocess(img, default_model.config)])  # as the commands read it
    ref = attack(default_model, x, target=76, eps=4 / 255, steps=3, seed=0, progress=False)
    assert after == {p.name: p.prob for p in ref.after[0]}
    assert before == {p.name: p.prob for p in ref.before[0]}
    assert adv.size == (224, 224) and pert.size == (224, 224)
    assert torch.equal(pil_to_tensor(adv), ref.adversarial[0])  # the 8-bit image the attack returned
    assert "SSIM" in summary and "tarantula" in summary
    with pytest.raises(UserError):
        run_attack(bank, None, "standard", "76 tarantula", "linf", "4/255", 3)
    with pytest.raises(UserError):
        run_attack(bank, img, "standard", "1000 nothing", "linf", "4/255", 3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key) and tag in ("script", "link", "img", "iframe"):
                self.urls.append(a[key])


@pytest.mark.slow
def test_app_serves_an_offline_page_on_localhost(default_model):
    from robustlens.app.server import ModelBank, launch

    bank = ModelBank()
    bank.models.put(default_model, *bank.standard)
    port = _free_port()
    app = launch(port=port, bank=bank, block=False)
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        refs = Refs()
        refs.feed(page)
        assert refs.urls
        external = [u for u in refs.urls if u.startswith(("http:", "https:", "//")) and "127.0.0.1" not in u]
        assert not external
        assert "fonts.googleapis" not in page and "cdn.jsdelivr" not in page
    finally:
        app.close()


def test_app_command_checks_its_port(capsys):
    assert main(["app", "--port", "0"]) == 2
    assert "--port" in capsys.readouterr().err


def test_inversion_and_dream_handlers(default_model):
    from robustlens.app.server import ModelBank, run_dream, run_inversion
    from robustlens.images import example_image

    bank = ModelBank()
    bank.models.put(default_model, *bank.standard)
    img = example_image("coffee")
    gallery = run_inversion(bank, img, "standard", "_blocks.2, _conv_head", 2)
    assert [c for _, c in gallery][0] == "original" and len(gallery) == 3
    assert gallery[1][1].startswith("_blocks.2 (feature distance")
    dreamt = run_dream(bank, img, "standard", "", 1, 1)
    assert dreamt.size == (224, 224)
    with pytest.raises(UserError):
        run_inversion(bank, img, "standard", "no_such_layer", 2)


def test_missing_robust_model_is_a_clear_error(tmp_path, monkeypatch):
    from robustlens.app.server import ModelBank, run_attack
    from robustlens.images import example_image
    from robustlens.models import DEFAULT_ROBUST_MODEL

    monkeypatch.setenv("ROBUSTLENS_MODELS", str(tmp_path))
    with pytest.raises(UserError, match=DEFAULT_ROBUST_MODEL):
        run_attack(ModelBank(), example_image("chelsea"), "robust", "0 tench", "l2", "1", 2)


def test_identical_output_images_go_to_gradio_as_distinct_png_files(tmp_path):
    """Gradio rewrites a returned PIL image in place under its content hash, so two requests with the same
    output raced (one client read a truncated body in CI); the app hands it unique PNG paths instead."""
    import numpy as np
    from PIL import Image

    from robustlens.app.common import _PngSink

    sink = _PngSink(keep=3)
    im = Image.new("RGB", (8, 8), (10, 20, 30))
    a, (b, caption), rest = sink((im, (im, "x"), {"k": 1}))
    assert isinstance(a, str) and a != b and caption == "x" and rest == {"k": 1}
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(im))  # lossless
    paths = [sink(im) for _ in range(4)]
    assert not Path(a).exists() and all(Path(p).exists() for p in paths[-3:])  # keeps the newest `keep`
