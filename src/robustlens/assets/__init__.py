"""Files that ship inside the package: the demo photo of a Corgi (``corgi.jpg``, MIT licence in
``LICENSE-corgi.txt``, from the examples of github.com/sedthh/pyxelate)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

ASSETS = Path(__file__).resolve().parent
CORGI = ASSETS / "corgi.jpg"
CORGI_LABEL = "corgi (bundled photo, MIT licence: robustlens/assets/LICENSE-corgi.txt)"


def corgi_image() -> Image.Image:
    """The bundled Corgi photo as an RGB Pillow image (read as every other image is: EXIF applied)."""
    from robustlens.images import load_pil

    return load_pil(CORGI)
