"""Per-model preprocessing: resize the short side, centre-crop, scale to [0, 1].

Normalisation (mean/std) is *not* done here: it is the first module of the model wrapper
(:class:`robustlens.models.Classifier`), so everything outside the model, ε included, is in [0, 1] pixel units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from PIL import Image

from robustlens.images import load_pil, pil_to_tensor, quantize, to_rgb, to_uint8

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite's (x*255 - 127) / 128 written as (x - mean) / std with x in [0, 1].
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class PreprocessConfig:
    """How images reach a model: short side resized to ``resize_size`` with ``interpolation``, centre crop of
    ``input_size``, values in [0, 1]; then the model's own ``mean``/``std`` normalisation."""

    input_size: int = 224
    resize_size: int = 256
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3
    notes: str = field(default="", compare=False)

    @classmethod
    def from_crop_pct(cls, input_size: int, crop_pct: float, **kw) -> "PreprocessConfig":
        """Config whose resize is ``floor(input_size / crop_pct)`` (timm and EfficientNet convention)."""
        return cls(input_size=input_size, resize_size=int(math.floor(input_size / crop_pct)), **kw)

    def to_dict(self) -> dict:
        return asdict(self)


def resize_short_side(img: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """Resize so the shorter side is ``size``, keeping the aspect ratio (long side truncated, as torchvision)."""
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), _INTERPOLATION[interpolation])


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """Centre crop of ``size``×``size`` (torchvision's rounding); pads with black if the image is smaller."""
    w, h = img.size
    if w < size or h < size:
        canvas = Image.new(img.mode, (max(w, size), max(h, size)))
        canvas.paste(img, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
        img, (w, h) = canvas, canvas.size
    left = int(round((w - size) / 2.0))
    top = int(round((h - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def preprocess(img: Image.Image, config: PreprocessConfig) -> torch.Tensor:
    """Pillow image -> model-ready float tensor (C, input_size, input_size) in [0, 1]."""
    img = resize_short_side(img, config.resize_size, config.interpolation)
    img = center_crop(img, config.input_size)
    x = pil_to_tensor(img)
    if config.channels == 1:
        x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)
    return x


def photo_with_crop(path: str, config: PreprocessConfig, crop: torch.Tensor) -> torch.Tensor | None:
    """The photo at ``path`` resized as :func:`robustlens.models.preprocess.preprocess` resizes it, with its centre
    crop replaced by ``crop`` (C,S,S), as a (3,H,W) tensor — or None when preprocessing that image would not
    give back exactly the 8-bit ``crop``."""
    if config.channels != 3:
        return None
    resized = resize_short_side(load_pil(path), config.resize_size, config.interpolation)
    w, h = resized.size
    size = config.input_size
    if w < size or h < size:
        return None
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    photo = resized.copy()
    photo.paste(Image.fromarray(to_uint8(crop)), (left, top))
    if not torch.equal(preprocess(photo, config), quantize(crop.detach().float().cpu())):
        return None
    return pil_to_tensor(photo)


def to_batch(images: Sequence[Image.Image], config: PreprocessConfig,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """Preprocess each Pillow image (converted to RGB first), stack and move to ``device``:
    (N, C, S, S) in [0, 1], contiguous (a permuted tensor would run other convolution kernels)."""
    return torch.stack([preprocess(to_rgb(img), config) for img in images]).to(device)
