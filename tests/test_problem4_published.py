"""Problem 4 on a robust ImageNet ResNet-50, simulated online: random-weight files in the real upstream layouts
(tests/data/upstream: torchvision's ResNet-50 in a temporary torch hub cache, MadryLab's imagenet_l2_3_0.pt
served from 127.0.0.1 through ROBUSTLENS_PUBLISHED_URL); `robustlens demo --model resnet50 --robust-model
madry_l2_3` runs every section ok with 4(e) on tiger cat and two more classes. The pictures mean nothing (random
weights); the path is what is tested. Few steps (--quick)."""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
from pathlib import Path

import pytest
from upstream_layout import write_from_manifest

from robustlens.cli.main import main
from robustlens.models import published as pub
from robustlens.report.context import GOLDFISH, TARANTULA, TIGER_CAT

MANIFESTS = Path(__file__).parent / "data" / "upstream"


@pytest.fixture(scope="module")
def upstream_files(tmp_path_factory) -> Path:
    """torchvision's resnet50 file and MadryLab's imagenet_l2_3_0.pt, random weights, upstream layouts."""
    import torchvision

    d = tmp_path_factory.mktemp("upstream")
    tv = json.loads((MANIFESTS / "torchvision_resnet50.json").read_text())
    write_from_manifest(tv, d / os.path.basename(torchvision.models.ResNet50_Weights.DEFAULT.url), seed=3)
    madry = json.loads((MANIFESTS / "madry_l2_3.json").read_text())
    write_from_manifest(madry, d / "imagenet_l2_3_0.pt", seed=4)
    return d


@pytest.fixture
def simulated_hub(upstream_files, tmp_path, monkeypatch):
    """A fresh torch hub cache holding torchvision's file; MadryLab's served from 127.0.0.1."""
    for var in ("ROBUSTLENS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "torch"
    ck = home / "hub" / "checkpoints"
    ck.mkdir(parents=True)
    for f in upstream_files.iterdir():
        if f.suffix == ".pth":
            os.symlink(f, ck / f.name)
    monkeypatch.setenv("TORCH_HOME", str(home))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(upstream_files))
    handler.log_message = lambda *a: None  # type: ignore[assignment]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv(pub.BASE_URL_ENV, f"http://127.0.0.1:{httpd.server_address[1]}")
    yield ck
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow
def test_demo_on_resnet50_and_madry_l2_3_every_section_ok(simulated_hub, tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # as a user runs it: from another folder, output relative to it
    code = main(["demo", "--model", "resnet50", "--robust-model", "madry_l2_3", "--quick", "--json",
                 "--out", "p4", "--threads", "2", "--budget", "1"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert {s["id"]: s["status"] for s in out["sections"]} == {s["id"]: "ok" for s in out["sections"]}
    assert len(out["sections"]) == 12 and out["estimate"]["main_pass_s"] > 0
    report = json.loads((elsewhere / "p4" / "report.json").read_text())
    robust = next(s for s in report["sections"] if s["id"] == "problem4_robust")
    assert robust["data"]["targets"] == [TIGER_CAT, TARANTULA, GOLDFISH]
    rows = robust["data"]["models"]["robust"]["rows"]
    assert [r["target"] for r in rows] == [TIGER_CAT, TARANTULA, GOLDFISH]
    assert robust["settings"]["robust model"].startswith("madry_l2_3")
    assert robust["settings"]["standard model"].startswith("resnet50 (imagenet")
    assert (elsewhere / "p4" / "report.html").is_file()
    assert (simulated_hub / "imagenet_l2_3_0.robustlens.safetensors").is_file()


def test_budget_scales_the_steps_to_fit_and_leaves_a_cheap_run_alone():
    from robustlens.report.budget import FIXED_S, estimate, fit
    from robustlens.report.context import ReportSettings

    st = ReportSettings()
    full = estimate(st, 0.5, 1.0)
    assert full.total > 600  # ResNet-50-like passes: the full settings do not fit 10 minutes
    scaled, cost = fit(st, 0.5, 1.0, 600)
    assert cost.total <= 600 * 1.02 and 0 < cost.factor < 1
    assert scaled.attack_steps < st.attack_steps and scaled.robust_inversion_steps >= 2 and scaled.synthesis_steps
    assert estimate(scaled, 0.5, 1.0).total == cost.total
    same, cheap = fit(st, 0.001, 0.002, 600)
    assert same == st and cheap.factor == 1 and cheap.total < FIXED_S + 20


@pytest.mark.slow
def test_notebook_with_madry_l2_3_runs_every_cell(simulated_hub, monkeypatch):
    """The notebook as a student runs it online with ROBUSTLENS_NOTEBOOK_ROBUST=madry_l2_3 (quick mode): every
    cell runs, 4(e) attacks MadryLab's ResNet-50 towards tiger cat and two more classes, and the side-by-side
    comparison runs on torchvision's ResNet-50 and madry_l2_3. The kernel inherits the simulated hub's
    environment."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("ROBUSTLENS_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("ROBUSTLENS_NOTEBOOK_ROBUST", "madry_l2_3")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(root / "notebooks" / "problem_set.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=1200, kernel_name="python3",
                            resources={"metadata": {"path": str(root / "notebooks")}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    for t in (TIGER_CAT, TARANTULA, GOLDFISH):
        assert f"4(e) madry_l2_3 -> {t}: success" in text
    assert "madry_l2_3" in text.split("4(e) madry_l2_3 -> 1:")[1]  # the comparison ran on the pair after 4(e)
    assert (simulated_hub / "imagenet_l2_3_0.robustlens.safetensors").is_file()
