"""Reading, converting and writing images.

Rules:
- Any file Pillow can decode (JPEG, PNG, WebP, BMP, TIFF, ...) is read; EXIF orientation is applied.
- Every mode becomes RGB: alpha (RGBA, LA, P with transparency) is composited on white; 16/32-bit integer
  greyscale (``I;16``, ``I``) is scaled to 8 bits by value/257 (16-bit) or by its min-max range (32-bit and
  float); CMYK and YCbCr use Pillow's conversion.
- At most :func:`max_pixels` pixels (default 50 MP; ``ROBUSTLENS_MAX_PIXELS`` or ``--max-pixels`` change it):
  the size is read from the file's header and a larger image is refused before it is decoded.
- Every error while reading (missing, unreadable, corrupt, truncated, not an image) is a one-line
  :class:`UserError` naming the file and the reason.
- Tensors are float in [0, 1], shape (3, H, W) for one image and (N, 3, H, W) for a batch.
- :func:`save_image` writes lossless formats only (PNG by default), so a saved image reloads to the same
  uint8 pixels; :func:`quantize` rounds a tensor to that 8-bit grid.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from robustlens.errors import UserError

ImageFile.LOAD_TRUNCATED_IMAGES = False
# The pixel limit is ours (max_pixels, checked on the header size before decoding), so that --max-pixels can
# raise it above Pillow's fixed bomb threshold.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "ROBUSTLENS_MAX_PIXELS"
_max_pixels: int | None = None

LOSSLESS_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".webp"}


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a Pillow image of any mode to RGB by the rules in the module docstring."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L")
    elif img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(np.round(arr).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def max_pixels() -> int:
    """The largest image (width x height) that is decoded: :func:`set_max_pixels`, else the
    ``ROBUSTLENS_MAX_PIXELS`` environment variable, else 50 MP."""
    if _max_pixels is not None:
        return _max_pixels
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    return parse_max_pixels(text, MAX_PIXELS_ENV)


def parse_max_pixels(text: str | float | int, name: str = "--max-pixels") -> int:
    """A pixel count from ``text`` (``50000000``, ``50e6``); must be a whole number >= 1."""
    from robustlens.checks import parse_number

    value = parse_number(text, name)
    if value < 1 or value != int(value):
        raise UserError(f"{name} must be a whole number of pixels >= 1, got {text}")
    return int(value)


def set_max_pixels(limit: int | None) -> None:
    """Set the pixel limit for this process (None: back to the environment variable or the default)."""
    global _max_pixels
    if limit is not None and limit < 1:
        raise UserError(f"the pixel limit must be at least 1, got {limit}")
    _max_pixels = limit


def check_size(size: tuple[int, int], where: str) -> None:
    """Refuse an image of ``size`` (width, height) over :func:`max_pixels`."""
    w, h = size
    limit = max_pixels()
    if w * h > limit:
        raise UserError(f"{where}: image is {w}x{h} = {w * h / 1e6:.1f} MP, over the limit of {limit / 1e6:g} MP "
                        f"(raise it with --max-pixels or {MAX_PIXELS_ENV})")
    if w < 1 or h < 1:
        raise UserError(f"{where}: image has no pixels ({w}x{h})")


def _reason(e: BaseException) -> str:
    """One line for an exception raised while reading a file."""
    text = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).strip()
    text = text.splitlines()[0] if text else ""
    return text or type(e).__name__


def load_pil(path: str | Path) -> Image.Image:
    """Read an image file as an RGB Pillow image (EXIF orientation applied); bad files raise UserError.

    The size in the header is checked against :func:`max_pixels` before any pixel is decoded."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"image file not found: {p}")
    if p.is_dir():
        raise UserError(f"expected an image file, got a directory: {p}")
    try:
        fh = open(p, "rb")
    except OSError as e:
        raise UserError(f"cannot read image {p}: {_reason(e)}") from None
    with fh:
        return decode_image(fh, str(p))


def decode_image(fh, where: str) -> Image.Image:
    """Decode an open binary file (or file-like object) as RGB; ``where`` names it in errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings about odd files; errors still raise
            with Image.open(fh) as img:
                check_size(img.size, where)
                img.seek(0)
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
    except UserError:
        raise
    except UnidentifiedImageError:
        raise UserError(f"not an image file (Pillow cannot identify it): {where}") from None
    except MemoryError:
        raise UserError(f"{where}: not enough memory to decode this image") from None
    except Exception as e:  # any decoder failure on untrusted bytes is a fact about the file
        raise UserError(f"cannot decode image {where}: {_reason(e)} (truncated or corrupt file?)") from None


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB Pillow image -> float tensor (3, H, W) in [0, 1]."""
    arr = np.asarray(to_rgb(img), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous().float().div_(255.0)


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as a float tensor (3, H, W) in [0, 1] (no resizing)."""
    return pil_to_tensor(load_pil(path))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (H, W) tensor in [0, 1] -> uint8 array (H, W, 3) or (H, W), rounded to nearest."""
    x = x.detach().float().cpu().clamp(0, 1)
    arr = torch.round(x * 255.0).to(torch.uint8).numpy()
    return arr.transpose(1, 2, 0) if arr.ndim == 3 else arr


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round a [0, 1] tensor to the 8-bit grid that :func:`save_image` writes (k/255)."""
    return torch.round(x.clamp(0, 1) * 255.0) / 255.0


def save_image(x: torch.Tensor, path: str | Path) -> Path:
    """Write a (3, H, W) or (1, 3, H, W) tensor in [0, 1] losslessly; returns the path."""
    p = Path(path)
    if p.suffix.lower() not in LOSSLESS_SUFFIXES:
        raise UserError(f"{p.name}: save as one of {sorted(LOSSLESS_SUFFIXES)} (lossless), not {p.suffix!r}")
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"save_image takes one image, got a batch of shape {tuple(x.shape)}")
        x = x[0]
    arr = to_uint8(x)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    p.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"lossless": True, "quality": 100} if p.suffix.lower() == ".webp" else {}
    Image.fromarray(arr).save(p, **kwargs)
    return p


def example_image(name: str = "chelsea") -> Image.Image:
    """A photo that ships inside an installed package (scikit-image's CC0 samples: ``chelsea``, ``coffee``,
    ``astronaut``, ``rocket``), as RGB."""
    from skimage import data

    fn = getattr(data, name, None)
    if fn is None or name not in {"chelsea", "coffee", "astronaut", "rocket"}:
        raise UserError(f"unknown example image {name!r}; choose chelsea, coffee, astronaut or rocket")
    return Image.fromarray(fn()).convert("RGB")
