"""CLI: attack / invert / dream / visualize write their files; bad input is one line on stderr, exit 2, and
nothing written. Tests that need the photo skip without ../shared."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from robustlens.cli.main import main

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared").resolve()
CORGI = SHARED / "data" / "images" / "corgi.jpg"


def corgi() -> str:
    if not CORGI.exists():
        pytest.skip(f"needs {CORGI} (the shared data folder beside the repository)")
    return str(CORGI)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(capsys, argv, pattern, out_dir):
    try:
        code, out, err = run(capsys, *argv, "--out", out_dir)
    except SystemExit as e:  # argparse rejects it (bad number, missing option): also one line, exit 2
        code, err = e.code, capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(pattern, err, re.IGNORECASE), err
    assert not Path(out_dir).exists()


@pytest.fixture
def image(tmp_path) -> str:
    """A small photo-like PNG that needs no shared data (bad-input tests fail before using it much)."""
    import torch

    from robustlens.images import save_image

    return str(save_image(torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)), tmp_path / "img.png"))


BAD = {
    "negative eps": (["attack", "{img}", "--untargeted", "--eps=-1/255"], r"--eps must be >= 0"),
    "negative eps decimal": (["attack", "{img}", "--untargeted", "--eps", "-0.01"], r"--eps must be >= 0"),
    "zero steps": (["attack", "{img}", "--untargeted", "--steps", "0"], r"--steps must be > 0"),
    "unknown class": (["attack", "{img}", "--target", "flying spaghetti"], r"unknown class"),
    "ambiguous class": (["attack", "{img}", "--target", "cat"], r"ambiguous"),
    "class index out of range": (["attack", "{img}", "--target", "1000"], r"out of range"),
    "eps not a number": (["attack", "{img}", "--untargeted", "--eps", "four"], r"not a number"),
    "no goal": (["attack", "{img}"], r"--target|--untargeted"),
    "missing image": (["attack", "{tmp}/nope.jpg", "--untargeted"], r"not found"),
    "invert unknown layer": (["invert", "{img}", "--layer", "_blocks.99"], r"unknown layer '_blocks.99'.*did you mean"),
    "invert zero steps": (["invert", "{img}", "--layer", "_blocks.2", "--steps", "0"], r"--steps must be > 0"),
    "dream unknown layer": (["dream", "{img}", "--layer", "_blok.3"], r"unknown layer.*_blocks"),
    "dream too many octaves": (["dream", "{img}", "--layer", "_blocks.3", "--octaves", "12"], r"smallest octave"),
    "visualize bad objective": (["visualize", "--objective", "_blocks.3"], r"LAYER:CHANNEL"),
    "visualize unknown layer": (["visualize", "--objective", "_blocks.30:1"], r"unknown layer"),
    "visualize channel range": (["visualize", "--objective", "_blocks.3:999"], r"channel 999 is out of range"),
    "visualize bad param": (["visualize", "--objective", "_blocks.3:1", "--param", "cppn"], r"invalid choice"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2_nothing_written(capsys, tmp_path, image, case):
    argv, pattern = BAD[case]
    argv = [a.format(img=image, tmp=tmp_path) for a in argv]
    assert_user_error(capsys, argv, pattern, tmp_path / "out")


@pytest.mark.slow
def test_attack_two_targets_then_classify_the_saved_pngs(capsys, tmp_path):
    """Must-show 1 through the CLI: both targets succeed, and `robustlens classify` of each saved PNG gives
    the target."""
    out = tmp_path / "atk"
    code, stdout, _ = run(capsys, "attack", corgi(), "--target", "tarantula", "--target", "tiger cat",
                          "--eps", "4/255", "--steps", "50", "--out", out, "--json")
    assert code == 0
    res = json.loads(stdout)
    assert [r["target"] for r in res["results"]] == [76, 282]
    assert all(r["success"] for r in res["results"])
    assert all(r["linf_255"] <= 4 + 1e-4 and r["psnr_db"] > 35 and r["ssim"] > 0.95 for r in res["results"])
    assert res["results"][0]["before"][0]["index"] == 263
    names = set(res["files"])
    assert {"original.png", "adversarial_76.png", "adversarial_282.png", "perturbation_76.png", "top5_before.png",
            "top5_after_282.png", "loss.png"} <= names
    assert names | {"result.json"} == {p.name for p in out.iterdir()}
    assert [(r["file"], r["top1"], r["same_pixels"]) for r in res["reloaded"]] == [
        ("adversarial_76.png", 76, True), ("adversarial_282.png", 282, True)]
    for t in (76, 282):
        code, stdout, _ = run(capsys, "classify", out / f"adversarial_{t}.png", "--json")
        assert code == 0 and json.loads(stdout)["images"][0]["topk"][0]["index"] == t


@pytest.mark.slow
def test_untargeted_attack_l2(capsys, tmp_path):
    code, stdout, _ = run(capsys, "attack", corgi(), "--untargeted", "--norm", "l2", "--eps", "1.0", "--steps", "10",
                          "--out", tmp_path / "u", "--json")
    assert code == 0
    row = json.loads(stdout)["results"][0]
    assert row["success"] and row["target"] is None and row["label"] == 263 and row["l2"] <= 1.0 + 1e-5
    assert (tmp_path / "u" / "adversarial.png").exists()


@pytest.mark.slow
def test_invert_dream_visualize_write_their_files(capsys, tmp_path):
    img = corgi()
    code, stdout, _ = run(capsys, "invert", img, "--layer", "_blocks.1", "--layer", "_blocks.4", "--steps", "3",
                          "--out", tmp_path / "inv", "--json")
    assert code == 0
    res = json.loads(stdout)
    assert [r["layer"] for r in res["layers"]] == ["_blocks.1", "_blocks.4"]
    assert all(r["distance"] < r["start_distance"] for r in res["layers"])
    written = {p.name for p in (tmp_path / "inv").iterdir()}
    assert {"inversion.png", "reconstruction__blocks.1.png", "result.json"} <= written

    code, stdout, _ = run(capsys, "dream", img, "--layer", "_blocks.3", "--octaves", "2", "--steps", "2",
                          "--out", tmp_path / "dr", "--json")
    assert code == 0 and json.loads(stdout)["octave_sizes"] == [[160, 160], [224, 224]]
    written = {p.name for p in (tmp_path / "dr").iterdir()}
    assert written == {"dream.png", "original.png", "comparison.png", "result.json"}

    code, stdout, _ = run(capsys, "visualize", "--objective", "_blocks.3:5", "--steps", "3", "--size", "96",
                          "--out", tmp_path / "vis", "--json")
    assert code == 0 and json.loads(stdout)["settings"]["param"] == "fft"
    assert {"visualization.png", "loss.png", "result.json"} == {p.name for p in (tmp_path / "vis").iterdir()}
