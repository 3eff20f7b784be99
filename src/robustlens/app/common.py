"""What every tab of the app shares: the checks of its fields and uploads, the two models
(:class:`ModelBank`), the model input and output images, and the guard that turns a failure into one line in
the page. :mod:`robustlens.app.server` (the attack, inversion and DeepDream tabs and the server) and
:mod:`robustlens.app.tabs` (attribution and synthesis) both build on it."""

from __future__ import annotations

import math
import sys
import tempfile
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from robustlens.checks import parse_number
from robustlens.errors import UserError
from robustlens.models import DEFAULT_MODEL, DEFAULT_ROBUST_MODEL, Classifier
from robustlens.models.cache import ModelCache
from robustlens.models.preprocess import to_batch

UPLOAD_MAX_BYTES = 32 * 1024 * 1024  # larger uploads are refused by the server before any handler runs
LIMITS = {"steps": (1, 200), "inv_steps": (1, 500), "dream_steps": (1, 100), "octaves": (1, 5), "syn_steps": (1, 720)}


def class_choices(model: Classifier) -> list[str]:
    """``"282 tiger cat"`` for every class of ``model``, in index order (what the target box searches)."""
    return [f"{i} {model.class_name(i)}" for i in range(model.num_classes)]


def parse_choice(choice: str | int) -> int:
    """The class index at the start of a :func:`class_choices` entry (or a bare index)."""
    text = str(choice).strip()
    head = text.split(" ", 1)[0]
    if not head.isdigit():
        raise UserError(f"pick a target class from the list (got {text!r})")
    return int(head)


def parse_eps(text: str | float) -> float:
    """ε from the box: a number or a fraction such as ``4/255``."""
    value = parse_number(text, "ε")
    if not 0 <= value <= 1:
        raise UserError(f"ε is in pixel units [0, 1]; got {value}")
    return value


def whole(name: str, value, lo: int, hi: int) -> int:
    """A whole number from an app field (the HTTP API can send anything): finite, integral, in [lo, hi]."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v != int(v) or not lo <= v <= hi:
        raise UserError(f"{name} must be a whole number in {lo}..{hi}, got {value!r}")
    return int(v)


def load_upload(image) -> Image.Image:
    """The guard for every uploaded image: a file path (what the page sends) over :data:`UPLOAD_MAX_BYTES` or
    over the pixel limit is refused before decoding; a Pillow image is checked for its pixel count."""
    from robustlens.images import check_size, load_pil, to_rgb

    if image is None:
        raise UserError("upload an image or pick an example first")
    if isinstance(image, Image.Image):
        check_size(image.size, "the image")
        return to_rgb(image)
    path = Path(str(image))
    try:
        size = path.stat().st_size
    except OSError as e:
        raise UserError(f"cannot read the upload: {e.strerror or e}") from None
    if size > UPLOAD_MAX_BYTES:
        raise UserError(f"the upload is {size / 2**20:.1f} MB, over the limit of {UPLOAD_MAX_BYTES / 2**20:g} MB")
    try:
        return load_pil(path)
    except UserError as e:  # name the upload, not the server's temporary path
        raise UserError(str(e).replace(str(path), "the upload")) from None


def topk_dict(preds) -> dict[str, float]:
    """Top-k predictions as the ``{label: probability}`` a Gradio Label shows as bars."""
    return {p.name: p.prob for p in preds}


@dataclass
class ModelBank:
    """The app's two models, built on first use: ``"standard"`` and ``"robust"`` (names and weights given),
    kept in one :class:`robustlens.models.cache.ModelCache` (the one the report uses)."""

    standard: tuple[str, str | None] = (DEFAULT_MODEL, None)
    robust: tuple[str, str | None] = (DEFAULT_ROBUST_MODEL, None)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    models: ModelCache = field(init=False)

    def __post_init__(self) -> None:
        self.models = ModelCache(self.device)

    def get(self, kind: str) -> Classifier:
        if kind not in ("standard", "robust"):
            raise UserError(f"unknown model kind {kind!r}")
        name, weights = getattr(self, kind)
        return self.models.get(name, weights)

    def label(self, kind: str) -> str:
        return f"{kind} ({getattr(self, kind)[0]})"


def _input(model: Classifier, image: Image.Image | None) -> torch.Tensor:
    """The uploaded image (a file path, checked by :func:`load_upload`) as the commands read it: (1, C, S, S) in
    [0, 1] on the model's device."""
    return to_batch([load_upload(image)], model.config, next(model.parameters()).device)


def _pil(x: torch.Tensor) -> Image.Image:
    from robustlens.images import to_uint8

    arr = to_uint8(x.detach().cpu())
    return Image.fromarray(arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)


class _PngSink:
    """Hands the app's output images to Gradio as PNG files with unique names.

    Gradio caches a returned PIL image under the hash of its bytes and writes it in place, so two requests that
    produce the same image (two seeds that both end at the clean image, say) rewrite one file while the first
    is being downloaded, and the client gets a truncated body. A file path is copied into Gradio's cache under a
    temporary name and renamed, which is safe; the sink keeps the newest ``keep`` files and deletes older ones."""

    def __init__(self, keep: int = 256):
        self.keep, self.paths = keep, deque[Path]()
        self.folder: Path | None = None

    def __call__(self, value):
        if isinstance(value, Image.Image):
            return self.save(value)
        if isinstance(value, tuple):
            return tuple(self(v) for v in value)
        if isinstance(value, list):
            return [self(v) for v in value]
        return value

    def save(self, image: Image.Image) -> str:
        if self.folder is None or not self.folder.is_dir():
            self.folder = Path(tempfile.mkdtemp(prefix="robustlens-app-out-"))
        path = self.folder / f"{uuid.uuid4().hex}.png"
        image.save(path, format="PNG")
        self.paths.append(path)
        while len(self.paths) > self.keep:
            self.paths.popleft().unlink(missing_ok=True)
        return str(path)


_png_sink = _PngSink()


def _guard(fn: Callable):
    """Turn a UserError into a Gradio error box (one line, no traceback); any other failure also becomes one
    line in the page (its traceback goes to the server's stderr) and leaves the server ready for the next one.
    Output images go to Gradio as PNG files (:class:`_PngSink`)."""
    import gradio as gr

    def wrapped(*args, **kwargs):
        try:
            return _png_sink(fn(*args, **kwargs))
        except UserError as e:
            raise gr.Error(str(e)) from None
        except Exception as e:  # a bug must not take the page down with it: say so, log it, serve on
            traceback.print_exc(file=sys.stderr)
            raise gr.Error(f"internal error ({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None

    wrapped.__name__ = fn.__name__
    return wrapped
