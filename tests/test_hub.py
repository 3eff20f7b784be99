"""The published-checkpoint hub: the real download code (robustlens.models.hub) against an HTTP server on
127.0.0.1 serving small checkpoints made here; safe conversion of MadryLab-style pickles; the CLI."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from robustlens.cli.main import main
from robustlens.errors import UserError
from robustlens.models import create_model
from robustlens.models import published as pub
from robustlens.models._registry import registered
from robustlens.models.checkpoints import read_state_dict
from robustlens.models.foreign import convert_checkpoint, read_foreign_checkpoint
from robustlens.models.hub import digest_record, download, hub_checkpoints
from robustlens.models.small import LeNet5
from robustlens.models.torchvision_models import torchvision_names

MARKER_NAME = "pwned-by-pickle"


class Evil:
    """An object whose unpickling would run a shell command (as a malicious checkpoint could)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def madry_checkpoint(path: Path, *, legacy: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """A MadryLab-layout checkpoint of a LeNet-5 (``module.model.*``, the attacker's copy, the normaliser), with
    an optimizer state and an object that would run code if unpickled; returns the network's state dict."""
    torch.manual_seed(seed)
    net = LeNet5().state_dict()
    model = {f"module.model.{k}": v for k, v in net.items()}
    model |= {f"module.attacker.model.{k}": v.clone() for k, v in net.items()}
    model |= {"module.normalizer.new_mean": torch.zeros(1, 1, 1), "module.normalizer.new_std": torch.ones(1, 1, 1),
              "module.attacker.normalize.new_mean": torch.zeros(1, 1, 1),
              "module.attacker.normalize.new_std": torch.ones(1, 1, 1)}
    ckpt = {"model": model, "optimizer": {"state": {0: {"momentum_buffer": torch.ones(3)}}}, "epoch": 89,
            "schedule": Evil(path.parent / MARKER_NAME)}
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return net


class Server:
    """An HTTP server on 127.0.0.1 in a thread. ``files`` maps names to bytes; ``status`` forces an error code;
    ``cut_after`` closes the first answer after that many bytes (an interrupted download); ``ranges`` turns
    Range support off when False. ``requests`` records (path, Range header)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.status: int | None = None
        self.cut_after: int | None = None
        self.ranges = True
        self.content_type = "application/octet-stream"
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path.lstrip("/"))
                if server.status or data is None:
                    self.send_error(server.status or 404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and server.ranges:
                    start = int(rng.removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Type", server.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    body, server.cut_after = body[:server.cut_after], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def online(tmp_path, monkeypatch):
    """Downloads allowed, the torch hub cache in tmp_path, a local server as the published base URL."""
    monkeypatch.delenv("ROBUSTLENS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    server = Server()
    monkeypatch.setenv(pub.BASE_URL_ENV, server.url)
    yield server
    server.close()


@pytest.fixture
def lenet_entry(monkeypatch, tmp_path):
    """A published entry for a LeNet-5 Madry checkpoint (small, so the tests are fast)."""
    entry = pub.Published(name="test_lenet", arch="mnist_lenet5", url="https://example.invalid/lenet.pt",
                          filename="lenet_madry.pt", dataset="mnist", threat="L2 eps=1", mean=(0.0,), std=(1.0,),
                          licence="test", citation="test", page="test", url_source="test")
    monkeypatch.setitem(pub.PUBLISHED, entry.name, entry)
    src = tmp_path / "src" / entry.filename
    src.parent.mkdir()
    net = madry_checkpoint(src)
    return entry, src, net


def cache_files() -> list[str]:
    d = hub_checkpoints()
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_weights_only_refuses_the_madry_pickle_and_the_restricted_reader_never_runs_it(tmp_path):
    path = tmp_path / "ckpt.pt"
    net = madry_checkpoint(path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # why a conversion is needed at all
    state = read_foreign_checkpoint(path)
    assert not (tmp_path / MARKER_NAME).exists()
    assert torch.equal(state["module.model.conv1.weight"], net["conv1.weight"])


@pytest.mark.parametrize("legacy", [False, True])
def test_convert_keeps_the_network_drops_the_attacker_and_never_runs_code(tmp_path, legacy):
    src = tmp_path / "madry.pt"
    net = madry_checkpoint(src, legacy=legacy)
    dst = convert_checkpoint(src, tmp_path / "madry.safetensors", {"source": "test"})
    state = read_state_dict(dst)
    assert set(state) == set(net)  # no attacker copy, no normaliser, no prefix
    assert all(torch.equal(state[k], net[k]) for k in net)
    assert not (tmp_path / MARKER_NAME).exists()
    model = create_model("mnist_lenet5", str(dst))
    ref = LeNet5().eval()
    ref.load_state_dict(net)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x))


def test_download_convert_load_and_reuse(online, lenet_entry):
    entry, src, net = lenet_entry
    online.files[entry.filename] = src.read_bytes()
    model = pub.load_published(entry.name)
    raw = hub_checkpoints() / entry.filename
    record = json.loads(digest_record(raw).read_text())
    assert record["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert cache_files() == sorted([entry.filename, f"{entry.filename}.sha256.json", "lenet_madry.robustlens.json",
                                    "lenet_madry.robustlens.safetensors"])
    assert torch.equal(model.net.conv1.weight, net["conv1.weight"])
    assert model.name == entry.name
    n = len(online.requests)
    pub.load_published(entry.name)  # from the cache: no request
    assert len(online.requests) == n


def test_published_sha256_is_checked_and_a_wrong_file_leaves_nothing(online, lenet_entry, monkeypatch):
    entry, src, _ = lenet_entry
    online.files[entry.filename] = src.read_bytes()
    monkeypatch.setitem(pub.PUBLISHED, entry.name, replace(entry, sha256="0" * 64))
    with pytest.raises(UserError, match="refused .*SHA-256.*nothing was kept") as e:
        pub.fetch_published(entry.name)
    assert "\n" not in str(e.value)
    assert cache_files() == []
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    monkeypatch.setitem(pub.PUBLISHED, entry.name, replace(entry, sha256=good))
    assert pub.fetch_published(entry.name).is_file()


def test_first_download_digest_is_recorded_and_checked_after(online, lenet_entry):
    entry, src, _ = lenet_entry
    online.files[entry.filename] = src.read_bytes()
    url = f"{online.url}/{entry.filename}"
    target = hub_checkpoints() / entry.filename
    assert download(url, target, what="x").check == "first"
    assert download(url, target, what="x").check == "recorded"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the cached file changes on disk
    target.write_bytes(bytes(data))
    with pytest.raises(UserError, match="recorded at its first download"):
        download(url, target, what="x")


def test_interrupted_download_is_resumed_with_a_range_request(online, lenet_entry):
    entry, src, _ = lenet_entry
    data = src.read_bytes()
    online.files[entry.filename] = data
    online.cut_after = len(data) // 3
    with pytest.raises(UserError, match=r"bytes kept in lenet_madry.pt.partial; run again to resume") as e:
        pub.fetch_published(entry.name)
    assert "\n" not in str(e.value)
    partial = hub_checkpoints() / (entry.filename + ".partial")
    assert partial.stat().st_size == len(data) // 3
    path = pub.fetch_published(entry.name)
    assert online.requests[-1][1] == f"bytes={len(data) // 3}-"
    assert (hub_checkpoints() / entry.filename).read_bytes() == data
    assert path.is_file() and not partial.exists()


def test_a_file_that_is_no_checkpoint_is_refused_and_removed(online, lenet_entry):
    entry, _, _ = lenet_entry
    online.files[entry.filename] = b"not a checkpoint at all" * 100
    with pytest.raises(UserError, match="cannot read checkpoint .*the download was removed from the cache") as e:
        pub.fetch_published(entry.name)
    assert "\n" not in str(e.value)
    assert cache_files() == []


def test_server_without_ranges_restarts_from_zero(online, lenet_entry):
    entry, src, _ = lenet_entry
    data = src.read_bytes()
    online.files[entry.filename] = data
    online.ranges = False
    online.cut_after = 1000
    with pytest.raises(UserError):
        pub.fetch_published(entry.name)
    pub.fetch_published(entry.name)
    assert (hub_checkpoints() / entry.filename).read_bytes() == data


@pytest.mark.parametrize("status", [404, 500])
def test_http_errors_are_one_line(online, lenet_entry, status):
    entry, _, _ = lenet_entry
    online.status = status
    with pytest.raises(UserError, match=f"HTTP {status} .*fetch http://127.0.0.1:.*/lenet_madry.pt and put it at") as e:
        pub.fetch_published(entry.name)
    assert "\n" not in str(e.value)
    assert cache_files() == []


def test_no_network_connection_refused(online, lenet_entry, monkeypatch):
    entry, _, _ = lenet_entry
    online.close()
    with pytest.raises(UserError, match="connection refused.*fetch http://127.0.0.1") as e:
        pub.fetch_published(entry.name)
    assert "\n" not in str(e.value)


GDRIVE_VIRUS_SCAN_PAGE = (  # the page Google Drive sends instead of a file too large to scan (shape as of 2024)
    b'<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title><meta http-equiv="content-type" '
    b'content="text/html; charset=utf-8"/></head><body><div class="uc-main"><div id="uc-text"><p '
    b'class="uc-warning-caption">Google Drive can\'t scan this file for viruses.</p><p class="uc-warning-subcaption">'
    b'<span class="uc-name-size"><a href="/open?id=1TmT5oGa1UvVjM3d-XeSj_XmKqBNRUg8r">Salman2020Do_R50.pt</a> (98M)'
    b'</span> is too large for Google to scan for viruses. Would you still like to download this file?</p><form '
    b'id="download-form" action="https://drive.usercontent.google.com/download" method="get"><input type="submit" '
    b'id="uc-download-link" value="Download anyway"/><input type="hidden" name="id" '
    b'value="1TmT5oGa1UvVjM3d-XeSj_XmKqBNRUg8r"><input type="hidden" name="export" value="download"><input '
    b'type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="0f1e2d3c"></form></div></div>'
    b'</body></html>')


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"])
def test_google_drive_virus_scan_page_is_refused_in_one_line(online, lenet_entry, content_type):
    """Served from 127.0.0.1 as Drive sends it (text/html) and as a mirror might (declared as a binary file)."""
    entry, _, _ = lenet_entry
    online.files[entry.filename] = GDRIVE_VIRUS_SCAN_PAGE
    online.content_type = content_type
    with pytest.raises(UserError, match="Google Drive's virus-scan confirmation page.*put it at .*lenet_madry.pt$") \
            as e:
        pub.fetch_published(entry.name)
    assert "\n" not in str(e.value)
    assert cache_files() == []


def test_other_web_page_is_refused(online, lenet_entry):
    entry, _, _ = lenet_entry
    online.files[entry.filename] = b"\n  <html><body>Please sign in</body></html>"
    with pytest.raises(UserError, match="answered with a web page"):
        pub.fetch_published(entry.name)
    assert cache_files() == []


def test_published_list_says_where_each_url_comes_from_and_the_recorded_digest(online, lenet_entry, capsys,
                                                                                 monkeypatch):
    entry, src, _ = lenet_entry
    online.files[entry.filename] = src.read_bytes()
    assert main(["models", "--weights", entry.name, "--json"]) == 0
    fetched = json.loads(capsys.readouterr().out)
    assert fetched["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    rows = {r["name"]: r for r in pub.list_published()}
    assert rows[entry.name]["sha256_recorded"] == fetched["sha256"]
    assert rows[entry.name]["fetch_url"] == f"{online.url}/{entry.filename}"
    assert rows[entry.name]["fetch_url_source"] == f"${pub.BASE_URL_ENV} (a mirror)"
    monkeypatch.delenv(pub.BASE_URL_ENV)
    rows = {r["name"]: r for r in pub.list_published()}
    assert "MadryLab/robustness README.rst" in rows["madry_l2_3"]["fetch_url_source"]
    assert "robustbench/model_zoo/cifar10.py" in rows["Wong2020Fast"]["fetch_url_source"]
    assert "1Re--_lf3jCEw9bnQqGkjw3J7v2tSZKrv" in rows["Wong2020Fast"]["fetch_url_source"]
    assert main(["models", "--published"]) == 0
    text = capsys.readouterr().out
    assert "URL from: RobustBench robustbench/model_zoo/imagenet.py" in text
    assert f"SHA-256 {fetched['sha256'][:16]}... recorded at the first download" in text


def test_offline_one_line_names_the_url_and_the_place(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROBUSTLENS_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(pub.BASE_URL_ENV, raising=False)
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    assert main(["classify", str(tmp_path / "x.png"), "--model", "resnet50", "--weights", "madry_l2_3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "https://www.dropbox.com/s/knf4uimlqsi1yz8/imagenet_l2_3_0.pt?dl=1" in err
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "imagenet_l2_3_0.pt") in err
    with pytest.raises(UserError, match="for the architecture resnet50, not resnet18"):
        create_model("resnet18", "madry_l2_3")


def test_cli_lists_published_checkpoints(capsys):
    assert main(["models", "--published", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["published"]
    names = {r["name"] for r in rows}
    assert {"madry_l2_3", "madry_linf_4", "madry_linf_8", "Carmon2019Unlabeled", "Wong2020Fast",
            "Salman2020Do_R50"} <= names
    for r in rows:
        assert r["url"].startswith("https://") and r["licence"] and r["citation"] and len(r["mean"]) == 3
        assert registered(r["arch"]) is not None or r["arch"] in torchvision_names()
    assert pub.standard_counterpart("madry_l2_3") == ("resnet50", "imagenet")
    assert pub.standard_counterpart("Wong2020Fast") is None
    assert main(["models", "--published"]) == 0
    assert "madry_l2_3" in capsys.readouterr().out


def test_cli_fetches_and_loads(online, lenet_entry, capsys):
    entry, src, _ = lenet_entry
    online.files[entry.filename] = src.read_bytes()
    assert main(["models", "--weights", entry.name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["logits_shape"] == [1, 10] and out["path"].endswith(".robustlens.safetensors")


@pytest.mark.slow
def test_real_entry_madry_resnet50_through_create_model(online, tmp_path):
    """The real ``madry_l2_3`` entry (ResNet-50), served locally: download, conversion, the normaliser and the
    same logits as the network loaded directly."""
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet50().eval()
    sd = ref.state_dict()
    model = {f"module.model.{k}": v for k, v in sd.items()} | {f"module.attacker.model.{k}": v for k, v in sd.items()}
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    model |= {"module.normalizer.new_mean": mean.view(3, 1, 1), "module.normalizer.new_std": std.view(3, 1, 1)}
    buf = io.BytesIO()
    torch.save({"model": model, "epoch": 1, "schedule": Evil(tmp_path / MARKER_NAME)}, buf)
    online.files["imagenet_l2_3_0.pt"] = buf.getvalue()
    m = create_model("madry_l2_3")
    m2 = create_model("resnet50", "madry_l2_3")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want = ref((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
        assert torch.allclose(m(x), want, atol=1e-5) and torch.allclose(m2(x), want, atol=1e-5)
    assert not (tmp_path / MARKER_NAME).exists()


def test_a_raw_file_changed_after_its_conversion_is_checked_again(online, lenet_entry):
    entry, src, _ = lenet_entry
    online.files[entry.filename] = src.read_bytes()
    converted = pub.fetch_published(entry.name)
    raw = hub_checkpoints() / entry.filename
    madry_checkpoint(raw, seed=5)  # another file put at the same place by hand, newer than the conversion
    os.utime(raw, ns=(converted.stat().st_mtime_ns + 10**9,) * 2)
    with pytest.raises(UserError, match="recorded at its first download"):
        pub.fetch_published(entry.name)
