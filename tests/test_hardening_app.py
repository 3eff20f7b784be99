"""The app under load and bad uploads (issue #12), driven over its HTTP API on 127.0.0.1: uploads over the pixel
or size limit are refused with a message, 8 concurrent attacks are all answered, the server stays up, and a
failing request does not break the next one. Two tiny random-init models keep it to seconds."""

from __future__ import annotations

import importlib.util
import socket
import struct
import urllib.error
import urllib.request
import uuid
import zlib
from pathlib import Path

import pytest

from robustlens.errors import UserError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gradio_client") is None,
                                reason="needs Gradio and gradio_client (pip install 'robustlens[app]')")

SIZE_LIMIT = 200_000  # bytes, lowered for the test (the app's default is 32 MB)
TARGET = "3 chain saw"  # an Imagenette class


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def header_only_png(w: int, h: int) -> bytes:
    """A PNG that says w x h in 100 bytes (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def server():
    from robustlens.app import common
    from robustlens.app import server as app_server

    old = common.UPLOAD_MAX_BYTES
    common.UPLOAD_MAX_BYTES = SIZE_LIMIT
    bank = app_server.ModelBank(standard=("imagenette_resnet", "none"), robust=("mnist_lenet5", "none"))
    port = _free_port()
    app = app_server.launch(port=port, bank=bank, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()
        common.UPLOAD_MAX_BYTES = old


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False, httpx_kwargs={"timeout": 120})  # requests wait in the app's queue


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    from PIL import Image

    p = tmp_path_factory.mktemp("app") / "photo.png"
    Image.radial_gradient("L").convert("RGB").resize((96, 80)).save(p)
    return p


def attack(client, path, *, eps="4/255", steps=3, seed=0, kind="standard", target=TARGET):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), kind, target, "linf", eps, steps, seed, api_name="/attack_fn")


def assert_answered(result) -> None:
    adv, pert, before, after, summary = result
    assert Path(adv).is_file() and Path(pert).is_file() and "L∞" in summary
    assert len(before["confidences"]) == 5 and len(after["confidences"]) == 5


def refused(client, path, pattern: str, **kw) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=pattern) as e:
        attack(client, path, **kw)
    message = str(e.value)
    assert "\n" not in message.strip() and "Traceback" not in message
    return message


@pytest.mark.slow
def test_eight_concurrent_attacks_are_all_answered(server, client, photo):
    jobs = []
    from gradio_client import handle_file

    for seed in range(8):
        jobs.append(client.submit(handle_file(str(photo)), "standard", TARGET, "linf", "4/255", 3, seed,
                                  api_name="/attack_fn"))
    for job in jobs:
        assert_answered(job.result(timeout=240))
    assert urllib.request.urlopen(server, timeout=30).status == 200  # still up


@pytest.mark.slow  # the server takes ~20 s to start under load
def test_bad_uploads_are_refused_with_a_message_and_the_next_request_works(server, client, photo, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(header_only_png(30000, 30000))
    message = refused(client, bomb, "over the limit")
    assert "the upload" in message and "/tmp" not in message  # the server's temporary path is not shown
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(photo.read_bytes()[:200])
    refused(client, corrupt, "truncated|cannot decode|not an image|cannot identify")
    assert_answered(attack(client, photo))


@pytest.mark.slow  # the server takes ~20 s to start under load
def test_uploads_over_the_size_limit_are_refused_by_the_server(server, tmp_path, client, photo):
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (SIZE_LIMIT + 1000)
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + big + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(server + "gradio_api/upload", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 413 and b"size" in e.value.read()
    assert_answered(attack(client, photo))


@pytest.mark.slow
@pytest.mark.parametrize("field,value,pattern", [
    ("eps", "nan", "finite"), ("eps", "inf", "finite"), ("eps", "2", r"\[0, 1\]"),
    ("steps", 10 ** 9, "1..200|maximum"), ("steps", 2.5, "whole number"), ("seed", -1, "seed"),
    ("target", "99 nothing", "not in the list|not a class"),
])
def test_bad_numbers_from_the_api_are_one_line(server, client, photo, field, value, pattern):
    refused(client, photo, pattern, **{field: value})


@pytest.mark.slow  # the server takes ~20 s to start under load
def test_failing_requests_leave_the_server_working(server, client, photo):
    refused(client, photo, "finite", eps="nan")
    refused(client, photo, "pick a target|not a class|not in the list", target="oops")
    refused(client, photo, "1..200|minimum", steps=0)
    assert_answered(attack(client, photo))


def test_grey_model_handler_returns_pictures(photo):
    from robustlens.app.server import ModelBank, run_attack

    bank = ModelBank(standard=("imagenette_resnet", "none"), robust=("mnist_lenet5", "none"))
    adv, pert, _, _, summary = run_attack(bank, str(photo), "robust", "3 3", "linf", "0.1", 2)
    assert adv.size == (28, 28) and pert.size == (28, 28) and "L∞" in summary


def test_upload_guard_without_a_server(tmp_path):
    from PIL import Image

    from robustlens.app.common import load_upload, whole

    p = tmp_path / "bomb.png"
    p.write_bytes(header_only_png(20000, 20000))
    with pytest.raises(UserError, match="the upload: image is 20000x20000"):
        load_upload(str(p))
    with pytest.raises(UserError, match="over the limit"):
        load_upload(Image.new("L", (8000, 8000)))
    with pytest.raises(UserError, match="upload an image"):
        load_upload(None)
    assert load_upload(Image.new("L", (4, 4))).mode == "RGB"
    assert whole("steps", 3.0, 1, 5) == 3
    for bad in (float("nan"), float("inf"), 0, 6, 2.5, "x", None):
        with pytest.raises(UserError):
            whole("steps", bad, 1, 5)


@pytest.mark.slow  # the server takes ~20 s to start under load
def test_explain_and_synthesize_over_http(server, client, photo):
    """The new tabs' endpoints answer, and refuse bad input (unknown method; a pair that cannot be compared)
    with one line."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from robustlens.app.tabs import TOP1

    fig, summary = client.predict(handle_file(str(photo)), "standard", "saliency", TOP1, 0, api_name="/explain_fn")
    assert Path(fig).is_file() and "cos" in summary
    with pytest.raises(AppError, match="attribution method|not in the list") as e:
        client.predict(handle_file(str(photo)), "standard", "nope", TOP1, 0, api_name="/explain_fn")
    assert "\n" not in str(e.value).strip()
    with pytest.raises(AppError, match="differ in input size or classes") as e:
        client.predict(handle_file(str(photo)), "superres", TOP1, None, 2, 0, api_name="/synth_fn")
    assert "\n" not in str(e.value).strip()
    assert_answered(attack(client, photo))
