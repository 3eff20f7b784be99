import json

import pytest

from robustlens.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_classify_json_and_figures(capsys, tmp_path, corgi_path):
    code, out, err = run(capsys, "classify", str(corgi_path), "--json", "--out", str(tmp_path / "o"))
    assert code == 0
    res = json.loads(out)
    top = res["images"][0]["topk"]
    assert len(top) == 5 and top[0]["index"] == 263 and set(top[0]) == {"index", "name", "logit", "prob"}
    files = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert files == ["corgi_logits.png", "corgi_probs.png", "result.json"]
    assert json.loads((tmp_path / "o" / "result.json").read_text())["images"][0]["topk"] == top


def test_layers_resnet50(capsys):
    code, out, _ = run(capsys, "layers", "--model", "resnet50", "--weights", "none", "--json")
    assert code == 0 and json.loads(out)["last_layer_in_features"] == 2048


def _bad_inputs(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    return {
        "missing file": (["classify", str(tmp_path / "nope.jpg")], "not found"),
        "non-image": (["classify", str(tmp_path / "notes.txt")], "not an image"),
        "truncated jpeg": (["classify", str(tmp_path / "cut.jpg")], "truncated|cannot decode|not an image"),
        "unknown model": (["layers", "--model", "resnet5000"], "unknown model"),
    }


@pytest.mark.parametrize("case", ["missing file", "non-image", "truncated jpeg", "unknown model"])
def test_bad_input_one_line_exit_2_nothing_written(capsys, tmp_path, case):
    import re

    argv, pattern = _bad_inputs(tmp_path)[case]
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, *argv, "--out", str(out_dir)) if argv[0] == "classify" else run(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("robustlens: error:")
    assert re.search(pattern, err) and "Traceback" not in err
    assert not out_dir.exists()


def test_bad_number_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["classify", "x.jpg", "--topk", "five"])
    assert e.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cli_subprocess_exit_code(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "robustlens", "classify", str(tmp_path / "missing.png")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_classes_lookup(capsys):
    code, out, _ = run(capsys, "classes", "tiger cat", "--json")
    assert code == 0 and json.loads(out)["classes"][0]["index"] == 282
    code, out, _ = run(capsys, "classes", "tarantula")
    assert code == 0 and out.split()[0] == "76"


def test_unknown_class_one_line_exit_2(capsys):
    code, out, err = run(capsys, "classes", "flibbertigibbet")
    assert code == 2 and err.startswith("robustlens: error: unknown class") and len(err.strip().splitlines()) == 1
    code, out, err = run(capsys, "classes", "corgi")
    assert code == 2 and "ambiguous" in err and "263 (Pembroke)" in err
