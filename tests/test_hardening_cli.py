"""Hardening of the command line (issue #12): every command's --json is strict JSON, bad numbers and unwritable
destinations are one line with exit 2 and nothing written, outputs are published atomically, and the same
--seed gives the same result.json figures and PNG bytes.

Tiny models (``imagenette_resnet`` random init, 64 px; ``mnist_lenet5``) keep each run to a second or two."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from robustlens.cli.main import COMMANDS, main

TINY = ["--model", "imagenette_resnet", "--weights", "none"]


def strict_loads(text: str):
    """RFC 8259 JSON: NaN, Infinity and -Infinity are refused."""
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small_image() -> Path:
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images" / "corgi_small.jpg"
    if not path.is_file():
        pytest.skip(f"needs {path} (the shared data folder beside the repository)")
    return path


@pytest.fixture(scope="module")
def list_file(tmp_path_factory, small_image) -> Path:
    """A ``list:`` dataset of four copies of one photo with Imagenette labels 0..3."""
    folder = tmp_path_factory.mktemp("listdata")
    lines = []
    for i, wnid in enumerate(["n01440764", "n02102040", "n02979186", "n03000684"]):  # Imagenette classes
        (folder / f"img{i}.jpg").write_bytes(small_image.read_bytes())
        lines.append(f"img{i}.jpg, {wnid}")
    (folder / "data.txt").write_text("\n".join(lines) + "\n")
    return folder / "data.txt"


def command_argvs(image: Path, data: Path) -> dict[str, list[str]]:
    """One small run of every command that prints JSON (``app`` serves a page instead: tests/test_hardening_app)."""
    return {
        "models": ["models"],
        "classes": ["classes", "tiger cat"],
        "layers": ["layers", *TINY],
        "classify": ["classify", image, *TINY],
        "attack": ["attack", image, "--target", "3", "--steps", "3", *TINY],
        "invert": ["invert", image, "--layer", "layer2", "--steps", "3", *TINY],
        "dream": ["dream", image, "--layer", "layer2", "--steps", "2", "--octaves", "1", *TINY],
        "visualize": ["visualize", "--objective", "layer2:1", "--steps", "2", "--size", "32", *TINY],
        "evaluate": ["evaluate", "--data", f"list:{data}", "--steps", "2", "--no-progress", *TINY],
        "train": ["train", "--data", f"list:{data}", "--epochs", "1", "--batch-size", "2", "--no-progress", *TINY],
        "compare": ["compare", image, "--models", "imagenette_resnet=none,mnist_lenet5", "--steps", "2",
                    "--invert-steps", "2", "--eps", "1"],
        "report": ["report", "--quick", "--image", image, "--model", "imagenette_resnet", "--weights", "none",
                   "--robust-model", "imagenette_resnet", "--attack-steps", "2", "--inversion-steps", "2", "--target", "3"],
        "demo": ["demo", "--quick"],
        "explain": ["explain", image, "--method", "saliency", "--models", "imagenette_resnet=none"],
        "synthesize": ["synthesize", "inpaint", image, "--steps", "2", *TINY],
        "audit": ["audit", "--model", "imagenette_resnet=none", "--data", f"list:{data}", "--eps", "0.01",
                  "--pgd-steps", "1", "--no-explain", "--no-progress"],
    }


def test_every_command_is_covered():
    assert set(command_argvs(Path("x"), Path("y"))) | {"app"} == set(COMMANDS)


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if c == "report" else c
                                     for c in COMMANDS if c not in ("app", "demo")])
def test_every_command_prints_strict_json(capsys, tmp_path, small_image, list_file, command):
    argv = command_argvs(small_image, list_file)[command]
    out_dir = tmp_path / "out"
    takes_out = command not in ("models", "classes", "layers")
    code, out, err = run(capsys, *argv, "--json", *(["--out", out_dir] if takes_out else []))
    assert code in (0, 1), err  # report: 1 when a section failed (its JSON says which)
    assert "Traceback" not in err
    result = strict_loads(out)
    assert isinstance(result, dict) and out.count("\n") == 1
    for f in (out_dir.glob("*.json") if takes_out else []):
        strict_loads(f.read_text())
    if takes_out:
        assert list(out_dir.glob("*.json")), "no JSON file written"
        assert not list(tmp_path.glob(".*partial*")), "staging folder left behind"


@pytest.mark.slow
def test_demo_quick_prints_strict_json(capsys, tmp_path):
    code, out, err = run(capsys, *command_argvs(Path("x"), Path("y"))["demo"], "--json", "--out", tmp_path / "d")
    assert code in (0, 1) and "Traceback" not in err
    strict_loads(out)
    strict_loads((tmp_path / "d" / "report.json").read_text())


def test_json_helpers_replace_non_finite_by_null():
    from robustlens.cli.common import dumps

    text = dumps({"a": float("nan"), "b": [1.0, float("inf"), (float("-inf"),)], "c": {"d": 2.5}})
    assert strict_loads(text) == {"a": None, "b": [1.0, None, [None]], "c": {"d": 2.5}}


def one_line_exit_2(code: int, err: str, pattern: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustlens"), err
    assert "Traceback" not in err and re.search(pattern, err, re.I), err


BAD_NUMBERS = ["nan", "inf", "-inf", "NaN", "1/0", "1e999", "abc"]


@pytest.mark.parametrize("bad", BAD_NUMBERS)
@pytest.mark.parametrize("argv", [
    ["attack", "{img}", "--target", "1", "--eps", "{bad}"],
    ["attack", "{img}", "--target", "1", "--step-size", "{bad}"],
    ["invert", "{img}", "--layer", "layer2", "--lr", "{bad}"],
    ["invert", "{img}", "--layer", "layer2", "--tv", "{bad}"],
    ["dream", "{img}", "--layer", "layer2", "--step-size", "{bad}"],
    ["dream", "{img}", "--layer", "layer2", "--octave-scale", "{bad}"],
    ["visualize", "--objective", "layer2:1", "--lr", "{bad}"],
    ["evaluate", "--data", "list:x", "--eps", "{bad}"],
    ["train", "--data", "list:x", "--lr", "{bad}"],
    ["train", "--data", "list:x", "--trades-beta", "{bad}"],
    ["train", "--data", "list:x", "--weight-decay", "{bad}"],
    ["compare", "{img}", "--models", "a,b", "--invert-lr", "{bad}"],
    ["report", "--eps", "{bad}"],
    ["classify", "{img}", "--max-pixels", "{bad}"],
], ids=lambda a: "-".join(a[:1] + [x for x in a if x.startswith("--") and x not in ("--target", "--layer")][-1:]))
def test_non_finite_numbers_are_one_line(capsys, tmp_path, small_image, argv, bad):
    i = argv.index("{bad}")
    argv = argv[:i - 1] + [f"{argv[i - 1]}={bad}"] + argv[i + 1:]  # --eps=-inf (a bare -inf looks like an option)
    argv = [a.format(img=small_image) for a in argv] + ["--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as e:
        main(argv)
    one_line_exit_2(e.value.code, capsys.readouterr().err, r"finite|not a number|must be")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv,pattern", [
    (["attack", "{img}", "--target", "1", "--eps", "-1"], "--eps"),
    (["attack", "{img}", "--target", "1", "--steps", "0"], "--steps"),
    (["invert", "{img}", "--layer", "layer2", "--lr", "0"], "--lr"),
    (["visualize", "--objective", "layer2:1", "--size", "100000"], "over the limit"),
    (["layers", "--size", "0"], "--size"),
    (["evaluate", "--data", "list:{list}", "--batch-size", "0"], "--batch-size"),
    (["train", "--data", "list:{list}", "--val-robust", "-1"], "--val-robust"),
    (["compare", "{img}", "--models", "imagenette_resnet,mnist_lenet5", "--invert-steps", "0"], "--invert-steps"),
])
def test_out_of_range_numbers_are_one_line(capsys, tmp_path, small_image, list_file, argv, pattern):
    argv = [a.format(img=small_image, list=list_file) for a in argv]
    argv += ["--out", str(tmp_path / "o")] if argv[0] != "layers" else []
    one_line_exit_2(*run(capsys, *argv)[::2], re.escape(pattern))
    assert not (tmp_path / "o").exists()


def test_vacuous_eps_is_allowed_but_said(capsys, tmp_path, small_image):
    code, out, err = run(capsys, "attack", small_image, "--target", "3", "--steps", "1", "--eps", "1", *TINY,
                         "--json", "--out", tmp_path / "o")
    assert code == 0 and "warning" in err and "constrains nothing" in err
    assert "constrains nothing" in strict_loads(out)["notes"][0]
    assert strict_loads((tmp_path / "o" / "result.json").read_text())["notes"] == strict_loads(out)["notes"]
    code, out, err = run(capsys, "attack", small_image, "--target", "3", "--steps", "1", "--norm", "l2",
                         "--eps", "200", *TINY, "--json")  # sqrt(3*64*64) = 110.9
    assert code == 0 and strict_loads(out)["notes"] and "warning" in err


def test_vacuous_eps_bounds():
    from robustlens.checks import vacuous_eps

    assert vacuous_eps("linf", 0.999, (3, 8, 8)) is None and vacuous_eps("linf", 1.0, (3, 8, 8))
    assert vacuous_eps("l2", 13.8, (3, 8, 8)) is None and vacuous_eps("l2", 192 ** 0.5, (3, 8, 8))
    assert vacuous_eps("l1", 191, (3, 8, 8)) is None and vacuous_eps("l1", 192, (3, 8, 8))
    assert vacuous_eps("l2", 1e9, ()) is None  # size unknown: only L∞ is judged


# --- destinations ---------------------------------------------------------------------------------------------

def unwritable_destinations(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "afile").write_text("in the way")
    cases = {"under /proc": Path("/proc/robustlens-x/out"), "a file in the way": tmp_path / "afile",
             "a file as a parent": tmp_path / "afile" / "out"}
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        cases["read-only folder"] = ro / "out"
    return cases


@pytest.mark.parametrize("case", ["under /proc", "a file in the way", "a file as a parent", "read-only folder"])
@pytest.mark.parametrize("command", ["attack", "classify", "report"])
def test_unwritable_out_is_one_line_and_writes_nothing(capsys, tmp_path, small_image, case, command):
    dests = unwritable_destinations(tmp_path)
    if case not in dests:
        pytest.skip("running as root: a read-only folder is writable")
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = {"attack": ["attack", small_image, "--target", "1", "--steps", "1", *TINY],
            "classify": ["classify", small_image, *TINY],
            "report": ["report", "--quick", "--image", small_image, *TINY]}[command]
    code, _, err = run(capsys, *argv, "--out", dests[case])
    one_line_exit_2(code, err, r"--out|cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_failed_run_keeps_the_old_result_and_leaves_no_staging(capsys, tmp_path, small_image, monkeypatch):
    out = tmp_path / "o"
    assert run(capsys, "attack", small_image, "--target", "1", "--steps", "1", *TINY, "--out", out)[0] == 0
    (out / "mine.txt").write_text("the user's own file")
    old = (out / "result.json").read_bytes()
    import robustlens.cli.commands.attack as attack_cmd

    def broken(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(attack_cmd, "plot_curves", broken)  # fails half-way through writing the figures
    with pytest.raises(RuntimeError):
        main(["attack", str(small_image), "--target", "1", "--steps", "2", *TINY, "--out", str(out)])
    assert (out / "result.json").read_bytes() == old and (out / "mine.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_interrupted_run_leaves_no_folder(capsys, tmp_path, small_image, monkeypatch):
    import robustlens.cli.commands.attack as attack_cmd

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(attack_cmd, "plot_curves", interrupt)
    code, _, err = run(capsys, "attack", small_image, "--target", "1", "--steps", "1", *TINY, "--out",
                       tmp_path / "o")
    assert code == 130 and not list(tmp_path.iterdir())


def test_success_replaces_result_files_and_keeps_other_files(capsys, tmp_path, small_image):
    out = tmp_path / "o"
    out.mkdir()
    (out / "result.json").write_text('{"stale": true}')
    (out / "notes.md").write_text("mine")
    assert run(capsys, "classify", small_image, *TINY, "--out", out)[0] == 0
    assert "stale" not in (out / "result.json").read_text() and (out / "notes.md").read_text() == "mine"
    assert (out / "corgi_small_probs.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --- determinism ----------------------------------------------------------------------------------------------

TIMING_KEYS = {"seconds", "speed", "time", "elapsed"}


def without_timings(obj):
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k not in TIMING_KEYS and "seconds" not in k}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


@pytest.mark.parametrize("argv", [
    ["attack", "{img}", "--target", "3", "--steps", "4", "--random-start", "--seed", "7", *TINY],
    ["invert", "{img}", "--layer", "layer2", "--layer", "layer3", "--steps", "4", "--seed", "7", *TINY],
], ids=["attack", "invert"])
def test_same_seed_same_figures_and_png_bytes(capsys, tmp_path, small_image, argv):
    argv = [a.format(img=small_image) for a in argv]
    runs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        assert run(capsys, *argv, "--out", out)[0] == 0
        runs.append(out)
    a, b = (without_timings(strict_loads((o / "result.json").read_text())) for o in runs)
    assert a == b
    pngs = sorted(p.name for p in runs[0].glob("*.png"))
    assert pngs and pngs == sorted(p.name for p in runs[1].glob("*.png"))
    for name in pngs:
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name
    # and a different seed changes the picture (the test can fail)
    assert run(capsys, *argv[:-len(TINY) - 1], "8", *TINY, "--out", tmp_path / "other")[0] == 0
    first = "adversarial.png" if argv[0] == "attack" else "reconstruction_layer2.png"
    assert (tmp_path / "other" / first).read_bytes() != (runs[0] / first).read_bytes()


def test_disk_full_while_writing_is_one_line_and_leaves_nothing(capsys, tmp_path, small_image, monkeypatch):
    import errno

    import robustlens.cli.commands.attack as attack_cmd

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "loss.png"))

    monkeypatch.setattr(attack_cmd, "plot_curves", full)
    code, _, err = run(capsys, "attack", small_image, "--target", "1", "--steps", "1", *TINY, "--out", tmp_path / "o")
    one_line_exit_2(code, err, "No space left")
    assert not list(tmp_path.iterdir())
