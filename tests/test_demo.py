"""`robustlens demo`: the whole report on the embedded default (the bundled Corgi photo + EfficientNet-Lite0)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pytest

from robustlens.cli.commands.report import settings_from
from robustlens.cli.main import build_parser, main
from robustlens.report import PARTS, ReportSettings

SECTION_IDS = ["problem1", "problem2", "problem3", "problem4_attacks", "problem4_difference", "problem4_inversion",
               "problem4_robust", "problem4_compare", "explain", "synthesis", "dream", "visualize"]


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.sections = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        if tag == "section":
            self.sections.append(a["id"])


def assert_attacks_reached_both_targets(section: dict, folder) -> None:
    """Both targets reached, as the report says and as the saved 8-bit PNGs classify when read back."""
    import torch

    from robustlens.images import load_pil, pil_to_tensor
    from robustlens.models import create_model

    rows = section["data"]["rows"]
    assert [r["target"] for r in rows] == [76, 282] and all(r["success"] for r in rows), rows
    model = create_model()
    original = np.asarray(load_pil(folder / "p4_original.png"), dtype=np.int16)
    for r in rows:
        adv = load_pil(folder / r["files"]["adversarial"])
        x = pil_to_tensor(adv)[None]  # (1, 3, 224, 224), the PNG as saved
        assert x.shape == (1, 3, 224, 224)
        with torch.no_grad():
            assert int(model(x).argmax()) == r["target"]
        assert 0 < np.abs(np.asarray(adv, dtype=np.int16) - original).max() <= 4  # ε = 4/255 in 8-bit steps


def test_full_demo_attacks_reach_both_targets(tmp_path):
    """The full demo's 4(a)(b) on the bundled Corgi: tarantula and tiger cat are both real attacks that succeed."""
    from robustlens.report import build_report

    rep = build_report(tmp_path, settings=ReportSettings(), parts=[p for p in PARTS if p.id == "problem4_attacks"])
    section = rep["sections"][0]
    assert section["status"] == "ok" and "corgi" in rep["image"]
    assert [r["before"][0]["index"] for r in section["data"]["rows"]] == [263, 263]  # Pembroke, not a target
    assert_attacks_reached_both_targets(section, tmp_path)


def test_default_demo_is_the_full_report():
    args = build_parser().parse_args(["demo"])
    assert args.out == "robustlens-demo" and not args.quick and args.image == "corgi"
    assert settings_from(args) == ReportSettings()
    assert [p.id for p in PARTS] == SECTION_IDS


@pytest.mark.slow
def test_quick_demo_writes_every_section(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["demo", "--quick", "--out", "demo"])
    out, err = capsys.readouterr()
    html = (tmp_path / "demo" / "report.html").resolve()
    assert out.strip().splitlines()[-1] == str(html)
    assert f"[{len(SECTION_IDS)}/{len(SECTION_IDS)}]" in err
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert code == 0, report["status"]
    assert [s["id"] for s in report["sections"]] == SECTION_IDS
    for s in report["sections"]:
        assert s["status"] == "ok", (s["id"], s["data"])  # the robust models ship with the package
        assert s["seconds"] >= 0 and s["blocks"]
        if s["status"] == "ok":
            assert s["settings"], s["id"]
    by_id = {s["id"]: s for s in report["sections"]}
    assert by_id["problem2"]["data"]["last_layer"]["in_features"] == 2048
    assert [r["target"] for r in by_id["problem4_attacks"]["data"]["rows"]] == [76, 282]
    assert len(by_id["problem4_inversion"]["data"]["layers"]) == 3
    assert report["settings"]["quick"] is True
    assert "corgi" in report["image"]
    assert_attacks_reached_both_targets(by_id["problem4_attacks"], tmp_path / "demo")

    page = Images()
    page.feed(html.read_text())
    assert page.sections == SECTION_IDS
    figures = [i["file"] for s in report["sections"] for b in s["blocks"] if b["kind"] == "figures" for i in b["items"]]
    assert [i["data-file"] for i in page.images] == figures
    assert all(i["src"].startswith("data:image/png;base64,") for i in page.images)
    for f in set(figures):
        assert (tmp_path / "demo" / f).is_file()


def test_demo_json_output(tmp_path, capsys):
    from robustlens import report as rp

    # Only the summary printing is checked here (one cheap part), the full run is the test above.
    part = next(p for p in PARTS if p.id == "problem1")
    original = list(rp.PARTS)
    rp.PARTS[:] = [part]
    try:
        assert main(["demo", "--quick", "--json", "--out", str(tmp_path / "d")]) == 0
    finally:
        rp.PARTS[:] = original
    result = json.loads(capsys.readouterr().out)
    assert result["html"] == str((tmp_path / "d" / "report.html").resolve())
    assert result["sections"][0]["id"] == "problem1" and result["status"] == "ok"
