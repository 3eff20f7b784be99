"""Image parameterisations: the tensor the optimiser moves (the *latent*) and how it becomes an image.

Every parameterisation has ``init(x) -> latent`` (the latent whose image is ``x``, so any start image works,
noise or a photo) and ``image(latent) -> x`` (N,C,H,W in [0,1], differentiable). Objectives never see the
latent, so parameterisations and objectives combine freely (the idea of Lucent's ``optvis.param``).

- :class:`Pixel`: one latent value per pixel, squashed into [0,1] with a sigmoid;
- :class:`FFT`: the image's 2-D Fourier spectrum, each frequency scaled by 1/f (so low frequencies move
  first: natural images have a 1/f spectrum), then the sigmoid;
- ``decorrelate=True`` (both): the three latent channels are decorrelated colour components mapped to RGB by
  the square root of ImageNet's colour covariance (so one latent step changes colour the way natural images
  vary, instead of pushing R, G, B independently).

No module-level device state: every tensor is made on the device of the input.
"""

from __future__ import annotations

import torch

# Square root of the RGB covariance of ImageNet pixels (columns: decorrelated components), as measured for
# Lucid's feature-visualisation work; normalised so that its largest column has unit norm.
_COLOR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))

_CLIP = 1e-4  # init of an image with exact 0/1 pixels: the sigmoid never reaches them


def color_matrix(device=None, dtype=torch.float32) -> torch.Tensor:
    """(3, 3) matrix M with rgb = M @ decorrelated (per pixel)."""
    m = torch.tensor(_COLOR_SQRT, device=device, dtype=dtype)
    return m / torch.linalg.vector_norm(m, dim=0).max()


def _to_rgb(z: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    if not decorrelate or z.shape[1] != 3:
        return z
    return torch.einsum("rc,nchw->nrhw", color_matrix(z.device, z.dtype), z)


def _from_rgb(x: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    if not decorrelate or x.shape[1] != 3:
        return x
    return torch.einsum("cr,nrhw->nchw", torch.linalg.inv(color_matrix(x.device, x.dtype)), x)


def _logit(x: torch.Tensor) -> torch.Tensor:
    return torch.logit(x.clamp(_CLIP, 1 - _CLIP))


class Pixel:
    """latent (N,C,H,W) -> sigmoid(colour(latent))."""

    def __init__(self, decorrelate: bool = True):
        self.decorrelate = decorrelate

    def init(self, x: torch.Tensor) -> torch.Tensor:
        return _from_rgb(_logit(x), self.decorrelate)

    def image(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(_to_rgb(latent, self.decorrelate))

    def __repr__(self) -> str:
        return f"Pixel(decorrelate={self.decorrelate})"


def frequency_scale(h: int, w: int, *, decay: float = 1.0, device=None) -> torch.Tensor:
    """(H, W//2+1) weights 1/max(f, 1/max(H,W))^decay over rfft2 frequencies f (cycles per pixel),
    normalised to unit root-mean-square (so a learning rate means about the same as for :class:`Pixel`)."""
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    f = torch.sqrt(fx * fx + fy * fy)
    s = 1.0 / f.clamp_min(1.0 / max(h, w)) ** decay
    return s / s.pow(2).mean().sqrt()


class FFT:
    """latent (N,C,H,W//2+1,2) real/imaginary spectrum -> sigmoid(colour(irfft2(scale · spectrum)))."""

    def __init__(self, decorrelate: bool = True, decay: float = 1.0):
        self.decorrelate, self.decay = decorrelate, decay
        self._size: tuple[int, int] | None = None  # the image size, set by init (rfft2 drops odd/even width)

    def _scale(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        return frequency_scale(h, w, decay=self.decay, device=like.device).to(like.dtype)[..., None]

    def init(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        self._size = (h, w)
        spec = torch.view_as_real(torch.fft.rfft2(_from_rgb(_logit(x), self.decorrelate), norm="ortho"))
        return spec / self._scale(h, w, x)

    def image(self, latent: torch.Tensor) -> torch.Tensor:
        if self._size is None:
            raise RuntimeError("FFT.image before FFT.init: init(x) sets the image size")
        h, w = self._size
        spec = torch.view_as_complex((latent * self._scale(h, w, latent)).contiguous())
        z = torch.fft.irfft2(spec, s=(h, w), norm="ortho")
        return torch.sigmoid(_to_rgb(z, self.decorrelate))

    def __repr__(self) -> str:
        return f"FFT(decorrelate={self.decorrelate}, decay={self.decay:g})"


PARAMS = ("pixel", "fft")


def make_param(name: str, *, decorrelate: bool = True) -> Pixel | FFT:
    """``"pixel"`` or ``"fft"``."""
    if name == "pixel":
        return Pixel(decorrelate)
    if name == "fft":
        return FFT(decorrelate)
    raise ValueError(f"unknown parameterisation {name!r}; use one of {', '.join(PARAMS)}")
