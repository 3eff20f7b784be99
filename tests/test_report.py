"""The report: self-contained HTML, sections recorded honestly, and numbers equal to the individual commands'."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from robustlens import report as rp
from robustlens.cli.main import main
from robustlens.errors import UserError
from robustlens.images import example_image
from robustlens.models import DEFAULT_ROBUST_MODEL
from robustlens.models.counterparts import standard_for
from robustlens.models.layers import default_inversion_layers
from robustlens.report.html import equation_html, render


class PageScan(HTMLParser):
    """Collects every tag's attributes, section ids and image sources of a page."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def of(self, tag: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag]


def scan(html: str) -> PageScan:
    p = PageScan()
    p.feed(html)
    return p


def assert_self_contained(html: str) -> PageScan:
    """No scripts, style sheets, fonts or images fetched from anywhere: every image is a PNG data URI."""
    page = scan(html)
    assert not page.of("script") and not page.of("link") and not page.of("iframe")
    assert "@import" not in html and "url(" not in html
    for tag, attrs in page.tags:
        for key in ("src", "href"):
            value = attrs.get(key)
            if value is not None and key == "href":
                assert value.startswith("#"), (tag, value)
    for img in page.of("img"):
        src = img["src"]
        assert src.startswith("data:image/png;base64,"), src[:40]
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    return page


def without_timing(obj):
    """``obj`` without wall times and per-step histories (the only things two equal runs may differ in)."""
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in ("seconds", "history")}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def chelsea_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("img") / "chelsea.png"
    example_image("chelsea").save(p)
    return p


def test_render_embeds_figures_and_escapes(tmp_path):
    import torch

    from robustlens.images import save_image

    save_image(torch.rand(3, 8, 8), tmp_path / "a.png")
    report = {"meta": {"title": "t <x>", "summary": {"image": "a & b"}},
              "sections": [{"id": "s1", "title": "One", "problem": "1", "status": "ok", "settings": {"eps": 0.5},
                            "seconds": 1.25, "data": {},
                            "blocks": [{"kind": "text", "text": "<script>alert(1)</script>"},
                                       {"kind": "equations", "lines": ["x_{i} = y^{2}"]},
                                       {"kind": "table", "columns": ["a"], "rows": [[1.23456789], [None]]},
                                       {"kind": "figures", "items": [{"file": "a.png", "caption": "fig"}]},
                                       {"kind": "note", "text": "not available"}]}]}
    html = render(report, tmp_path)
    page = assert_self_contained(html)
    assert len(page.of("img")) == 1 and page.of("img")[0]["data-file"] == "a.png"
    assert "&lt;script&gt;" in html and "t &lt;x&gt;" in html
    assert "1.235" in html and 'id="s1"' in html
    assert equation_html("x_{i} = y^{2} < z") == "x<sub>i</sub> = y<sup>2</sup> &lt; z"


def test_amplified_perturbation():
    import torch

    d = torch.tensor([[[0.01, -0.02], [0.0, 0.005]]]).expand(3, 2, 2)
    img, factor = rp.amplified(d)
    assert factor == pytest.approx(25.0)
    assert float(img.min()) == pytest.approx(0.0) and float(img[0, 1, 0]) == pytest.approx(0.5)
    img0, f0 = rp.amplified(torch.zeros(3, 2, 2))
    assert f0 == 1.0 and torch.all(img0 == 0.5)


def test_default_layers_known_and_generic(default_model):
    assert default_inversion_layers(default_model) == ("_blocks.2", "_blocks.7", "_conv_head")
    from robustlens.models import create_model

    net = create_model("imagenette_resnet", "none")
    assert default_inversion_layers(net) == ("layer2", "layer3", "layer4")


def test_bad_image_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    with pytest.raises(UserError):
        rp.build_report(out, image=tmp_path / "missing.jpg")
    assert not out.exists()
    assert main(["report", "--image", str(tmp_path / "missing.jpg"), "--out", str(out)]) == 2
    assert "image file not found" in capsys.readouterr().err
    assert not out.exists()


def test_bad_layer_or_target_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["report", "--layer", "no_such_layer", "--out", str(out)]) == 2
    assert "unknown layer 'no_such_layer'" in capsys.readouterr().err
    assert main(["report", "--target", "not a class at all", "--out", str(out)]) == 2
    assert "unknown class" in capsys.readouterr().err
    assert not out.exists()


def test_a_failing_part_is_recorded_and_the_rest_still_runs(tmp_path):
    def broken(ctx, s):
        raise RuntimeError("boom")

    parts = [rp.Part("broken", "Broken part", "x", broken),
             next(p for p in rp.PARTS if p.id == "problem1")]
    rep = rp.build_report(tmp_path, parts=parts, settings=rp.ReportSettings.quick_settings())
    assert [s["status"] for s in rep["sections"]] == ["error", "ok"]
    assert rep["status"] == "error"
    assert "RuntimeError: boom" in rep["sections"][0]["data"]["error"]
    assert "This part failed" in Path(rep["html"]).read_text()


@pytest.mark.slow
def test_report_numbers_equal_the_commands(tmp_path, chelsea_file, capsys):
    """Problem 2 and 4(a)-(c) of the report against `robustlens classify` and `robustlens attack` with the same
    settings and seed: every number equal."""
    settings = rp.ReportSettings.quick_settings(attack_steps=4)
    wanted = {"problem2", "problem4_attacks", "problem4_difference"}
    rep = rp.build_report(tmp_path / "report", image=chelsea_file, settings=settings,
                          parts=[p for p in rp.PARTS if p.id in wanted])
    on_disk = json.loads((tmp_path / "report" / "report.json").read_text())
    sections = {s["id"]: s for s in on_disk["sections"]}
    assert all(sections[i]["status"] == "ok" for i in wanted), [sections[i]["data"] for i in wanted]

    assert main(["attack", str(chelsea_file), "--target", "76", "--target", "282", "--eps", "4/255",
                 "--steps", "4", "--seed", "0", "--out", str(tmp_path / "attack"), "--json"]) == 0
    capsys.readouterr()
    cli = json.loads((tmp_path / "attack" / "result.json").read_text())
    ours = sections["problem4_attacks"]["data"]["attack"]
    assert ours["settings"] == cli["settings"]
    keys = ("target", "label", "success", "linf", "linf_255", "l2", "psnr_db", "ssim", "before", "after")
    assert [{k: r[k] for k in keys} for r in ours["results"]] == [{k: r[k] for k in keys} for r in cli["results"]]
    diff = sections["problem4_difference"]["data"]["rows"]
    assert [(r["linf"], r["l2"], r["psnr_db"], r["ssim"]) for r in diff] == \
        [(r["linf"], r["l2"], r["psnr_db"], r["ssim"]) for r in cli["results"]]

    assert main(["classify", str(chelsea_file), "--json"]) == 0
    classify = json.loads(capsys.readouterr().out)
    assert sections["problem2"]["data"]["pretrained_topk"] == classify["images"][0]["topk"]
    assert sections["problem2"]["data"]["last_layer"] == {"name": "fc", "in_features": 2048, "out_features": 1000}
    assert rep["status"] == "ok"


@pytest.fixture
def project_models(tmp_path, monkeypatch):
    """Random weights standing in for the trained Imagenette files, in a models folder of their own."""
    from safetensors.torch import save_file

    from robustlens.models import create_model

    folder = tmp_path / "models"
    folder.mkdir()
    for seed, name in enumerate((DEFAULT_ROBUST_MODEL, standard_for(DEFAULT_ROBUST_MODEL)[0])):
        net = create_model(name, "none", seed=seed).net
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / f"{name}.safetensors"))
    monkeypatch.setenv("ROBUSTLENS_MODELS", str(folder))
    return folder


@pytest.mark.slow
def test_robust_sections_equal_the_compare_command(tmp_path, project_models, chelsea_file, capsys):
    """4(e)(f): the same attack on the standard and the robust project model, and the side-by-side large-ε
    attack and inversions, whose numbers equal `robustlens compare` with the same settings."""
    parts = [p for p in rp.PARTS if p.id in ("problem4_robust", "problem4_compare")]
    rep = rp.build_report(tmp_path / "out", image=chelsea_file, parts=parts,
                          settings=rp.ReportSettings.quick_settings())
    e, f = rep["sections"]
    assert e["status"] == "ok" and f["status"] == "ok", (e["data"], f["data"])
    assert set(e["data"]["models"]) == {"standard", "robust"}
    for kind in ("standard", "robust"):
        m = e["data"]["models"][kind]
        assert m["model"]["model"] == {"robust": DEFAULT_ROBUST_MODEL,
                                       "standard": standard_for(DEFAULT_ROBUST_MODEL)[0]}[kind]
        assert [r["target"] for r in m["attack"]["results"]] == e["data"]["targets"]
        assert m["attack"]["settings"]["norm"] == "l2" and m["attack"]["settings"]["eps"] == 1.5
    assert f["data"]["layers"] == ["layer2", "layer3", "layer4"]
    page = assert_self_contained(Path(rep["html"]).read_text())
    figures = [i for s in rep["sections"] for b in s["blocks"] if b["kind"] == "figures" for i in b["items"]]
    assert len(page.of("img")) == len(figures)

    pair = f"{standard_for(DEFAULT_ROBUST_MODEL)[0]},{DEFAULT_ROBUST_MODEL}"
    args = ["compare", str(chelsea_file), "--models", pair,
            "--target", f["data"]["target"], "--eps", f"{rp.ReportSettings().robust_big_eps:g}", "--steps", "3", "--invert-steps", "3", "--seed", "0",
            "--out", str(tmp_path / "compare"), "--json"]
    for layer in f["data"]["layers"]:
        args += ["--layer", layer]
    assert main(args) == 0
    capsys.readouterr()
    cli = json.loads((tmp_path / "compare" / "result.json").read_text())
    ours = json.loads((tmp_path / "out" / "report.json").read_text())["sections"][1]["data"]["models"]
    assert without_timing(ours) == without_timing(cli["models"])


def test_robust_section_says_plainly_when_there_is_no_robust_model(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLENS_MODELS", str(tmp_path / "empty"))
    parts = [p for p in rp.PARTS if p.id in ("problem4_robust", "problem4_compare")]
    rep = rp.build_report(tmp_path / "out", parts=parts, settings=rp.ReportSettings.quick_settings())
    for s in rep["sections"]:
        assert s["status"] == "unavailable"
        assert "No robust model is available" in s["blocks"][0]["text"]
    assert rep["status"] == "partial"


def test_robust_pair_takes_the_published_checkpoints_standard_counterpart(tmp_path, monkeypatch):
    """A published checkpoint as --robust-model is set beside torchvision's weights of its architecture
    (models.published.standard_counterpart), not the report's main model; a fake entry, no download."""
    from PIL import Image

    from robustlens.models import counterparts, published
    from robustlens.report.context import ReportContext
    from robustlens.report.robust import robust_pair

    fake = published.Published(name="fake_robust_ckpt", arch="imagenette_resnet", url="http://invalid/x.pt",
                               filename="x.pt", dataset="imagenet", threat="L2 eps=3", mean=(0.5,) * 3,
                               std=(0.5,) * 3, licence="-", citation="-", page="-", url_source="-")
    monkeypatch.setitem(published.PUBLISHED, fake.name, fake)
    assert published.standard_counterpart(fake.name) == ("imagenette_resnet", "imagenet")
    assert counterparts.standard_for(fake.name) == ("imagenette_resnet", "imagenet")
    assert counterparts.standard_for("imagenette_resnet_robust") == ("imagenette_resnet_standard", None)
    assert counterparts.standard_for("resnet50") is None
    ctx = ReportContext(out=tmp_path, image=Image.new("RGB", (8, 8)), image_label="x", model_name="main",
                        weights=None, robust_name=fake.name, robust_weights=None,
                        settings=rp.ReportSettings.quick_settings(), device=torch.device("cpu"), log=print)
    robust, standard, main = (object() for _ in range(3))
    models = {(fake.name, None): robust, ("imagenette_resnet", "imagenet"): standard, ("main", None): main}
    monkeypatch.setattr(ctx, "model", lambda name, weights=None, **kw: models[(name, weights)])
    assert robust_pair(ctx) == (standard, robust)
    cifar = published.Published(**{**fake.to_dict(), "name": "fake_cifar", "dataset": "cifar10",
                                   "mean": (0.5,) * 3, "std": (0.5,) * 3})
    monkeypatch.setitem(published.PUBLISHED, cifar.name, cifar)
    models[(cifar.name, None)] = robust
    ctx.robust_name = cifar.name
    assert robust_pair(ctx) == (main, robust)  # no ImageNet counterpart: the report's main model


def test_explain_and_synthesis_sections(tmp_path, chelsea_file):
    """The two sections on the default pair in quick mode: ok, their figures written, numbers equal the APIs."""
    from robustlens.explain import edge_alignment
    from robustlens.images import load_pil
    from robustlens.models import DEFAULT_ROBUST_MODEL, create_model
    from robustlens.models.preprocess import to_batch
    from robustlens.recipes.synthesis import translate

    parts = [p for p in rp.PARTS if p.id in ("explain", "synthesis")]
    rep = rp.build_report(tmp_path / "out", image=chelsea_file, parts=parts,
                          settings=rp.ReportSettings.quick_settings())
    ex, sy = rep["sections"]
    assert ex["status"] == "ok" and sy["status"] == "ok", (ex["data"], sy["data"])
    files = [i["file"] for s in (ex, sy) for b in s["blocks"] if b["kind"] == "figures" for i in b["items"]]
    assert {"explain_maps.png", "synthesis_inpaint.png", "synthesis_sketch.png"} <= set(files)
    assert all((tmp_path / "out" / f).is_file() for f in files)
    robust = create_model(DEFAULT_ROBUST_MODEL)
    x = to_batch([load_pil(chelsea_file)], robust.config)
    t = ex["data"]["models"]["robust"]["target"]
    assert t == int(robust(x).argmax(1)) == ex["data"]["class"]
    assert ex["data"]["models"]["robust"]["alignment"]["cosine"] == pytest.approx(
        float(edge_alignment(robust, x, t)["cosine"][0]), rel=1e-5)
    assert set(ex["data"]["models"]["robust"]["methods"]) == {"saliency", "smoothgrad", "ig", "gradcam"}
    tr = sy["data"]["tasks"]["translate"]["robust"]
    ref = translate(robust, x, [tr["rows"][0]["target"]], steps=3, seed=0, progress=False).to_dict()
    assert tr["rows"][0]["target_prob"] == pytest.approx(ref["rows"][0]["target_prob"], rel=1e-5)
    assert set(sy["data"]["tasks"]) >= {"inpaint", "superres", "translate", "sketch"}
    if "generate" not in sy["data"]["tasks"]:
        assert any(b["kind"] == "note" and "seed Gaussians" in b["text"] for b in sy["blocks"])
