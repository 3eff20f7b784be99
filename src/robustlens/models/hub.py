"""Weights files in the torch hub cache: found there, downloaded when allowed, or one line saying what to put
where."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch

from robustlens.errors import UserError


def offline() -> bool:
    """Downloads are off (``ROBUSTLENS_OFFLINE`` or ``HF_HUB_OFFLINE`` set to anything but 0)."""
    return any(os.environ.get(v, "") not in ("", "0") for v in ("ROBUSTLENS_OFFLINE", "HF_HUB_OFFLINE"))

def _hub_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


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
