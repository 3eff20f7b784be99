"""Weights files in the torch hub cache: found there, downloaded when allowed (progress bar, SHA-256 check,
resumed after an interruption), or one line saying which URL to fetch and where to put the file."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from robustlens.errors import UserError

CHUNK = 1 << 20  # bytes read per request chunk
TIMEOUT_S = 15.0  # per socket operation


def offline() -> bool:
    """Downloads are off (``ROBUSTLENS_OFFLINE`` or ``HF_HUB_OFFLINE`` set to anything but 0)."""
    return any(os.environ.get(v, "") not in ("", "0") for v in ("ROBUSTLENS_OFFLINE", "HF_HUB_OFFLINE"))


def hub_checkpoints() -> Path:
    """The torch hub cache's ``checkpoints`` folder (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _hub_file(url: str) -> Path:
    return hub_checkpoints() / os.path.basename(url)


def fetch_to_hub_cache(url: str, what: str) -> Path:
    """The cached file for ``url`` in the torch hub cache, downloading it if allowed; a clear UserError when
    offline saying which file to put where."""
    target = _hub_file(url)
    if target.is_file():
        return target
    where = f"put {target.name} (from {url}) at {target}"
    if offline():
        raise UserError(f"{what} weights are not in the torch hub cache and downloads are off: {where}")
    target.parent.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=True)
    except Exception as e:  # URLError, timeouts, HTTP errors: all mean "no file"
        raise UserError(f"cannot download {what} weights ({type(e).__name__}); {where}") from None
    finally:
        socket.setdefaulttimeout(old)
    return target


# --- verified, resumable downloads ------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def digest_record(target: Path) -> Path:
    """The JSON beside ``target`` that holds the digest of its first download (when none was published)."""
    return target.with_name(target.name + ".sha256.json")


@dataclass(frozen=True)
class Verified:
    """A file in the cache and how its digest was checked: ``"published"`` (against a known SHA-256),
    ``"recorded"`` (against the digest recorded at its first download) or ``"first"`` (just recorded)."""

    path: Path
    sha256: str
    check: str


def verify(target: Path, url: str, sha256: str | None) -> Verified:
    """Check ``target`` against the published ``sha256`` or else the recorded first-download digest (recording
    it when there is none yet). A mismatch removes nothing here and raises UserError."""
    digest = sha256_of(target)
    if sha256:
        if digest != sha256.lower():
            raise UserError(f"{target} has SHA-256 {digest[:16]}..., not the published {sha256[:16]}...: "
                            f"delete it and download {url} again")
        return Verified(target, digest, "published")
    record = digest_record(target)
    if record.is_file():
        known = json.loads(record.read_text(encoding="utf-8")).get("sha256", "")
        if digest != known:
            raise UserError(f"{target} has SHA-256 {digest[:16]}..., not the {known[:16]}... recorded at its first "
                            f"download ({record}): delete both and download {url} again")
        return Verified(target, digest, "recorded")
    record.write_text(json.dumps({"url": url, "sha256": digest, "bytes": target.stat().st_size,
                                  "recorded": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                                  "note": "no published SHA-256: digest of the first download, checked from now on"},
                                 indent=2) + "\n", encoding="utf-8")
    return Verified(target, digest, "first")


def where_to_put(url: str, target: Path) -> str:
    return f"fetch {url} and put it at {target}"


def download(url: str, target: Path, *, what: str, sha256: str | None = None, progress: bool = True) -> Verified:
    """``target`` (a file in the hub cache), downloaded from ``url`` if it is not there yet, and verified.

    The bytes go to ``target.partial`` first; an interrupted download is resumed from there with an HTTP Range
    request. A file whose SHA-256 differs from the published one is deleted (nothing is left in the cache).
    Offline (:func:`offline`), with no network, or on an HTTP error: one-line UserError saying what to fetch
    and where to put it.
    """
    if target.is_file():
        return verify(target, url, sha256)
    if offline():
        raise UserError(f"{what} is not in the torch hub cache and downloads are off: {where_to_put(url, target)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    _fetch(url, partial, what=what, target=target, progress=progress)
    digest = sha256_of(partial)
    if sha256 and digest != sha256.lower():
        partial.unlink()
        raise UserError(f"refused {what}: the download from {url} has SHA-256 {digest[:16]}..., not the published "
                        f"{sha256[:16]}...; nothing was kept")
    os.replace(partial, target)
    return verify(target, url, sha256)


def _fetch(url: str, partial: Path, *, what: str, target: Path, progress: bool) -> None:
    """Download ``url`` into ``partial``, resuming from its current size; UserError on any failure (the part
    already received is kept for the next try unless the server sent something else than the file)."""
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "robustlens"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            _receive(response, partial, have=have, url=url, what=what, progress=progress)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the range starts at the end: the part is the whole file
            return
        raise UserError(f"cannot download {what}: HTTP {e.code} {e.reason} from {url}; "
                        f"{where_to_put(url, target)}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        got = partial.stat().st_size if partial.is_file() else 0
        resume = f" ({got} bytes kept in {partial.name}; run again to resume)" if got else ""
        raise UserError(f"cannot download {what} ({_short(reason)}){resume}; {where_to_put(url, target)}") from None


def _short(reason: object) -> str:
    if isinstance(reason, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    text = str(reason).strip().splitlines()
    return text[0] if text else type(reason).__name__


def _web_page(first: bytes, content_type: str) -> str:
    """What kind of web page the answer is ('' for a file): declared as HTML, or HTML by its first bytes
    (whatever the server declared). Google Drive answers a large file with its virus-scan confirmation page."""
    head = first[:4096].lstrip().lower()
    if "text/html" not in content_type.lower() and not head.startswith((b"<!doctype html", b"<html")):
        return ""
    if b"google drive" in head or b"virus scan" in head or b"drive.usercontent.google.com" in first.lower():
        return "Google Drive's virus-scan confirmation page (the file is too large for Drive to scan)"
    return "a web page (a sign-in or confirmation page?)"


def _receive(response, partial: Path, *, have: int, url: str, what: str, progress: bool) -> None:
    """Stream the body of ``response`` into ``partial`` (appending after a 206 answer to a Range request)."""
    from tqdm.auto import tqdm

    first = response.read(CHUNK)
    page = _web_page(first, response.headers.get("Content-Type") or "")
    if page:
        if not have:
            partial.unlink(missing_ok=True)
        raise UserError(f"cannot download {what}: {url} answered with {page}, not the file; download it in a "
                        f"browser and put it at {partial.with_name(partial.name.removesuffix('.partial'))}")
    resumed = response.status == 206
    length = response.headers.get("Content-Length")
    total = (int(length) + (have if resumed else 0)) if length else None
    mode = "ab" if resumed else "wb"
    start = have if resumed else 0
    with open(partial, mode) as f, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                        desc=partial.name.removesuffix(".partial"), disable=not progress,
                                        leave=False) as bar:
        f.write(first)
        bar.update(len(first))
        for block in iter(lambda: response.read(CHUNK), b""):
            f.write(block)
            bar.update(len(block))
    size = partial.stat().st_size
    if total is not None and size < total:
        raise OSError(f"connection closed after {size} of {total} bytes")
