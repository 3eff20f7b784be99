"""Hardening of what the tool reads (issue #12): images (pixel limit before decoding, every read error one line
naming the file), weights files (each unreadable kind says what it is), --data specs, numbers in the API."""

from __future__ import annotations

import io
import os
import pickle
import platform
import struct
import sys
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageFile

from robustlens.cli.main import main
from robustlens.errors import UserError
from robustlens.images import load_pil, max_pixels, set_max_pixels

FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF"}


def image_bytes(fmt: str, size=(40, 30)) -> bytes:
    """A small real picture (a gradient, so the codecs have something to compress) in ``fmt``."""
    w, h = size
    img = Image.frombytes("RGB", size, bytes((x * 7 + y * 3 + c * 50) % 256 for y in range(h) for x in range(w)
                                             for c in range(3)))
    buf = io.BytesIO()
    img.save(buf, FORMATS[fmt])
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(w: int = 30000, h: int = 30000) -> bytes:
    """A PNG whose header says w x h (900 MP by default) with a few bytes of data: cheap to make, huge to decode."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + png_chunk(b"IEND", b""))


def bomb_jpeg() -> bytes:
    """A real small JPEG with its frame header (SOF0) patched to 60000 x 60000."""
    data = bytearray(image_bytes("jpeg"))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", 60000, 60000)
    return bytes(data)


def bomb_gif() -> bytes:
    """A GIF whose logical screen and only frame say 65535 x 65535."""
    buf = io.BytesIO()
    Image.new("P", (2, 2)).save(buf, "GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", 65535, 65535)
    i = data.index(b"\x2c")  # image descriptor
    data[i + 5:i + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


@pytest.fixture(autouse=True)
def default_limit():
    set_max_pixels(None)
    yield
    set_max_pixels(None)


@pytest.mark.parametrize("make", [bomb_png, bomb_jpeg, bomb_gif], ids=["png", "jpeg", "gif"])
def test_oversized_images_are_refused_before_decoding(tmp_path, make, monkeypatch):
    p = tmp_path / "big.img"
    p.write_bytes(make())
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1))
    with pytest.raises(UserError, match=r"over the limit of 50 MP") as e:
        load_pil(p)
    assert str(p) in str(e.value) and not decoded  # refused on the header: nothing was decoded


def test_pixel_limit_option_and_environment(tmp_path, monkeypatch, capsys):
    p = tmp_path / "wide.png"
    Image.new("RGB", (300, 200)).save(p)
    assert max_pixels() == 50_000_000
    monkeypatch.setenv("ROBUSTLENS_MAX_PIXELS", "50e3")
    assert max_pixels() == 50_000
    with pytest.raises(UserError, match="60000 = 0.1 MP|300x200"):
        load_pil(p)
    set_max_pixels(60_000)  # what --max-pixels does: it wins over the environment
    assert load_pil(p).size == (300, 200)
    set_max_pixels(None)
    code = main(["classify", str(p), "--model", "imagenette_resnet", "--weights", "none", "--max-pixels", "59999"])
    err = capsys.readouterr().err
    assert code == 2 and "over the limit" in err and len(err.strip().splitlines()) == 1
    assert max_pixels() == 50_000  # main resets the process-wide limit it set
    monkeypatch.setenv("ROBUSTLENS_MAX_PIXELS", "lots")
    with pytest.raises(UserError, match="ROBUSTLENS_MAX_PIXELS"):
        load_pil(p)


def damaged_files(tmp_path: Path) -> dict[str, Path]:
    """Every kind of unreadable image file, in every format we read."""
    files = {}
    for fmt in FORMATS:
        good = image_bytes(fmt)
        variants = {"header only": good[:16], "cut in half": good[:len(good) // 2],
                    "cut near the end": good[:len(good) - 12] if fmt != "tiff" else good[:len(good) - 40],
                    "body zeroed": good[:24] + b"\0" * (len(good) - 24),
                    "body scrambled": good[:32] + bytes(reversed(good[32:]))}
        for what, data in variants.items():
            p = tmp_path / f"{what.replace(' ', '_')}.{fmt}"
            p.write_bytes(data)
            files[f"{fmt} {what}"] = p
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, not a picture\n")
    (tmp_path / "random.webp").write_bytes(os.urandom(2000))
    (tmp_path / "folder.png").mkdir()
    files.update({"empty": tmp_path / "empty.png", "text": tmp_path / "text.jpg",
                  "random bytes": tmp_path / "random.webp", "a directory": tmp_path / "folder.png",
                  "missing": tmp_path / "nope.png", "/dev/null": Path("/dev/null")})
    return files


def test_every_damaged_image_is_one_line_naming_the_file(tmp_path):
    loaded = []
    for what, p in damaged_files(tmp_path).items():
        try:
            load_pil(p)
            loaded.append(what)  # some damage still decodes (e.g. a scrambled JPEG body): that is fine
        except UserError as e:
            msg = str(e)
            assert "\n" not in msg and str(p) in msg and len(msg) < 400, (what, msg)
    assert not any(w.endswith(("header only", "cut in half")) for w in loaded), loaded
    assert {"empty", "text", "random bytes", "a directory", "missing", "/dev/null"}.isdisjoint(loaded)


def test_os_errors_while_reading_are_one_line(tmp_path, monkeypatch):
    import robustlens.images as images

    p = tmp_path / "locked.png"
    p.write_bytes(image_bytes("png"))

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(images, "open", denied, raising=False)  # what a file without read permission gives
    with pytest.raises(UserError, match=r"cannot read image .*locked.png: Permission denied"):
        load_pil(p)


def test_bad_image_on_the_command_line(tmp_path, capsys):
    p = tmp_path / "bomb.png"
    p.write_bytes(bomb_png())
    for argv in (["classify", str(p)], ["attack", str(p), "--target", "1"], ["invert", str(p), "--layer", "x"],
                 ["dream", str(p), "--layer", "layer2"], ["compare", str(p), "--models", "a,b"]):
        code = main([*argv, "--out", str(tmp_path / "o")] + (
            ["--model", "imagenette_resnet", "--weights", "none"] if argv[0] not in ("compare", "invert") else []))
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
        assert not (tmp_path / "o").exists()


# --- weights files --------------------------------------------------------------------------------------------

class Evil:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def weights_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Every kind of unreadable weights file, with the words its error must contain."""
    from safetensors.torch import save_file

    sd = {"w": torch.randn(3, 3)}
    good = tmp_path / "good.pt"
    torch.save(sd, good)
    data = good.read_bytes()
    legacy = tmp_path / "legacy_src.pt"
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    st = tmp_path / "good.safetensors"
    save_file(sd, str(st))
    st_bytes = st.read_bytes()
    evil_legacy = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"w": Evil()}):
        pickle.dump(obj, evil_legacy, protocol=2)
    cases = {
        "empty": (b"", "empty"),
        "random bytes": (os.urandom(4096), "not a weights file"),
        "text": (b"state_dict = {}\n", "not a weights file"),
        "truncated zip": (data[:len(data) // 2], "truncated or damaged zip"),
        "truncated legacy pickle": (legacy.read_bytes()[:200], "truncated"),
        "pickle with code": (pickle.dumps({"w": Evil()}, protocol=4), "would run code"),
        "legacy pickle with code": (evil_legacy.getvalue(), "would run code"),
        "not a state dict": (None, "does not hold a state dict"),
        "safetensors bad length": (struct.pack("<Q", 10 ** 12) + b"{}", "invalid safetensors header"),
        "safetensors bad json": (struct.pack("<Q", 6) + b"{oops}", "not valid JSON"),
        "safetensors truncated": (st_bytes[:-8], "truncated safetensors"),
    }
    out = {}
    for name, (content, words) in cases.items():
        suffix = ".safetensors" if name.startswith("safetensors") else ".pt"
        p = tmp_path / (name.replace(" ", "_") + suffix)
        if content is None:
            torch.save([1, 2, 3], p)
        else:
            p.write_bytes(content)
        out[name] = (p, words)
    zipped = tmp_path / "other.zip.pt"
    import zipfile

    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("readme.txt", "hello")
    out["zip that is not a checkpoint"] = (zipped, "not a torch checkpoint")
    return out


def test_every_unreadable_weights_file_says_what_it_is(tmp_path, capfd):
    from robustlens.models.checkpoints import read_state_dict

    for name, (p, words) in weights_files(tmp_path).items():
        with pytest.raises(UserError) as e:
            read_state_dict(p)
        msg = str(e.value)
        assert words in msg and str(p) in msg and "\n" not in msg, (name, msg)
    assert "should-never-run" not in capfd.readouterr().out


def test_wrong_architecture_and_junk_on_the_command_line(tmp_path, capsys):
    from robustlens.models import create_model

    other = tmp_path / "other_arch.pt"
    torch.save(create_model("mnist_lenet5", "none").net.state_dict(), other)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(1000))
    for path, words in ((other, "does not match the architecture"), (junk, "not a weights file")):
        code = main(["classify", str(tmp_path / "x.png"), "--model", "imagenette_resnet", "--weights", str(path)])
        err = capsys.readouterr().err
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


# --- the Python API refuses non-finite numbers ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    from robustlens.models import create_model

    return create_model("imagenette_resnet", "none")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_api_refuses_non_finite_numbers(tiny, bad):
    from robustlens.recipes.dream import dream
    from robustlens.recipes.inversion import invert
    from robustlens.recipes.visualize import visualize
    from robustlens.robust.compare import compare_models
    from robustlens.robust.evaluate import evaluate_robustness
    from robustlens.robust.training import TrainConfig

    x = torch.rand(3, 64, 64)
    calls = [lambda: invert(tiny, x, ["layer2"], lr=bad, steps=1, progress=False),
             lambda: invert(tiny, x, ["layer2"], tv_weight=bad, steps=1, progress=False),
             lambda: dream(tiny, x, "layer2", step_size=bad, steps=1, octaves=1, progress=False),
             lambda: dream(tiny, x, "layer2", octave_scale=bad, steps=1, octaves=2, progress=False),
             lambda: visualize(tiny, "layer2:0", lr=bad, steps=1, progress=False),
             lambda: evaluate_robustness(tiny, [(x, 0)], eps=[bad], steps=1),
             lambda: evaluate_robustness(tiny, [(x, 0)], eps=[0.1], step_size=bad, steps=1),
             lambda: compare_models([tiny, tiny], Image.new("RGB", (64, 64)), eps=bad, steps=1),
             lambda: compare_models([tiny, tiny], Image.new("RGB", (64, 64)), invert_lr=bad, steps=1)]
    calls += [lambda k=k: TrainConfig(**{k: bad}) for k in ("lr", "eps", "step_size", "trades_beta", "momentum",
                                                             "weight_decay", "warmup", "eps_ramp")]
    for call in calls:
        with pytest.raises(UserError, match="finite|must be"):
            call()


def test_data_specs_with_odd_paths_are_user_errors(tmp_path, tiny):
    from robustlens.robust.datasets import open_dataset, parse_data_spec

    for text in ("list:a\0b", "folder:" + "x" * 5000, "nips17:/proc/self/nope", "list:" + str(tmp_path),
                 "csv:foo", ":", "folder:~nosuchuser__/x"):
        with pytest.raises(UserError):
            parse_data_spec(text)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00 not utf-8, 3\n")
    with pytest.raises(UserError, match="cannot read"):
        open_dataset(f"list:{bad}", tiny)


# --- busy machines: OpenMP threads sleep while they wait, unless the user says otherwise -----------------------

@pytest.mark.parametrize("code,env,expected", [
    ("import robustlens", {}, "PASSIVE"),
    ("import robustlens.cli.main", {}, "PASSIVE"),
    ("import robustlens", {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),  # the user's own setting wins
    pytest.param("import torch, robustlens", {}, "unset", marks=pytest.mark.slow),  # too late: left alone
])
def test_wait_policy_default(code, env, expected):
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    base["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run([sys.executable, "-c", code + "; import os; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"],
                         env={**base, **env}, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == expected, out.stderr


_MMAPPED = """
import ctypes
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
before = libc.mallinfo2().hblkhd
buf = ctypes.create_string_buffer(64 << 20)  # one 64 MB malloc
print(libc.mallinfo2().hblkhd - before > (32 << 20), robustlens.runtime_env.allocator_tuned)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.parametrize("env,mmapped,tuned", [
    ({}, "False", "True"),  # tuned: a 64 MB buffer comes from the heap (kept for reuse), not from mmap
    ({"ROBUSTLENS_MALLOPT": "0"}, "True", "False"),  # opt out: glibc's default maps it
    ({"MALLOC_MMAP_THRESHOLD_": "1048576"}, "True", "False"),  # the user's own allocator setting wins
])
def test_import_tunes_the_glibc_allocator(env, mmapped, tuned):
    import subprocess

    base = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "ROBUSTLENS_MALLOPT"))}
    base["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run([sys.executable, "-c", "import robustlens, robustlens.runtime_env" + _MMAPPED],
                         env={**base, **env}, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == [mmapped, tuned], out.stderr
